"""``launch-train --resume JOB_DIR``: continue a stopped, failed or preempted job in its own job dir.

The job is run again as job.json recorded it (its ``argv``: every launch-train option of the
job), as a new attempt: hosts, spares and ports are checked again, every rank gets
LAUNCH_TRAIN_RESTART_COUNT one above the last attempt's, so deeplab.train continues from the
newest checkpoint in LAUNCH_TRAIN_CKPT_DIR (a preempted job: the step it saved when it was
asked to stop). Logs are appended to, after a "==== launch-train: resume" line; job.json keeps
the status of every earlier launch (status.earlier_launches). A requeued Slurm batch job runs
this (job_templates/slurm/submit.sbatch.j2).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from launcher.errors import LaunchError
from launcher.job.options import LaunchOptions
from launcher.job.rank_env import RESTART_COUNT_VAR


def resume_options(job_dir: Path, given: LaunchOptions) -> LaunchOptions:
    """The options of the job in ``job_dir``, as its next attempt; LaunchError when it cannot be resumed."""
    from launcher.job.arguments import parse_command_line
    from launcher.job.job_record import JobFileError, load_job

    # How the job is shown may change; what it is may not.
    shown = {"dry_run": given.dry_run, "json": given.json, "tee": given.tee, "status_interval_s": given.status_interval_s}
    if given != LaunchOptions(**shown):
        raise LaunchError("--resume JOB_DIR: the job runs again with the options job.json recorded; give no other "
                          "options (only --tee, --status-interval, --dry-run, --json)")
    job_dir = Path(job_dir).expanduser().absolute()
    try:
        record = load_job(job_dir)
    except JobFileError as err:
        raise LaunchError(f"--resume {job_dir}: {err}") from None
    argv = record.raw.get("argv")
    if not isinstance(argv, list) or not all(isinstance(word, str) for word in argv):
        raise LaunchError(f"--resume {job_dir}: job.json records no launch-train options (written by an older "
                          "launch-train); start the job again with its options")
    state = record.status.get("state")
    if state == "succeeded":
        raise LaunchError(f"--resume {job_dir}: the job already succeeded; nothing to resume")
    if state in ("planned", "running") and _job_processes(job_dir):
        raise LaunchError(f"--resume {job_dir}: the job is still running (see launch-train --status {job_dir})")
    recorded = parse_command_line(argv).options
    if recorded is None or Path(recorded.job_dir or "").absolute() != job_dir:
        raise LaunchError(f"--resume {job_dir}: job.json's options name another job dir ({recorded.job_dir if recorded else '?'})")
    shown = {name: value for name, value in shown.items() if value != getattr(LaunchOptions(), name)}
    return dataclasses.replace(recorded, resume=True, first_attempt=_last_attempt(record) + 1, **shown)


def _last_attempt(record) -> int:
    """The attempt number the job's ranks last ran with (LAUNCH_TRAIN_RESTART_COUNT in job.json)."""
    counts = []
    for rank in record.raw.get("ranks") or []:
        value = (rank.get("env") or {}).get(RESTART_COUNT_VAR) if isinstance(rank, dict) else None
        if isinstance(value, str) and value.isdigit() and len(value) < 8:
            counts.append(int(value))
    return max(counts, default=0)


def _job_processes(job_dir: Path) -> bool:
    """Does any process of this job still run on this machine (its marker in the environment)?"""
    from launcher.run.hang import rank_processes

    try:
        return bool(rank_processes(str(job_dir)))
    except (OSError, TypeError):
        return False
