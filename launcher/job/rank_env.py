"""What every rank is told: the environment contract between the launcher and any training program.

A program started by launch-train needs no flag to know where it runs or whether it is
being restarted; it reads these variables (deeplab-train does; an ``--entry`` script may):

| variable                     | value                                                              |
| ---------------------------- | ------------------------------------------------------------------ |
| DEVICE_TARGET                | the rank's platform: Ascend, GPU or CPU (MindSpore's device names)  |
| DEVICE_ID                    | the rank's device on its host (GPU: index among CUDA_VISIBLE_DEVICES)|
| RANK_ID, RANK_SIZE           | global rank and number of ranks                                     |
| LAUNCH_TRAIN_JOB_DIR         | the job directory (also how the launcher finds the job's processes) |
| LAUNCH_TRAIN_RESTART_COUNT   | 0 on the first attempt, N on the N-th restart of the whole job       |
| LAUNCH_TRAIN_MAX_RESTARTS    | --max-restarts                                                      |
| LAUNCH_TRAIN_CKPT_DIR        | where the job's checkpoints go: <job-dir>/LOG0/ckpt for every rank, |
|                              | so every rank resumes from the same files after a restart          |
| LAUNCH_TRAIN_SAVE_SIGNAL     | SIGUSR1 when --grace > 0: the signal that asks a rank to save a     |
|                              | checkpoint and stop (before a preemption); unset with --grace 0     |
| LAUNCH_TRAIN_PLANNED_RANKS   | the job's first rank count, only once it runs on fewer hosts (lost  |
|                              | hosts, --min-hosts): the trainer keeps that global batch            |

plus the start mode's own variables (MS_* for the dynamic cluster, RANK_TABLE_FILE and
SERVER_ID for a rank table; Open MPI adds OMPI_COMM_WORLD_* under mpirun). The launcher
never rewrites a program's arguments: restarting is the program's business, told by
LAUNCH_TRAIN_RESTART_COUNT (like torchrun's TORCHELASTIC_RESTART_COUNT).
"""
from __future__ import annotations

from pathlib import Path

DEVICE_TARGET_VAR = "DEVICE_TARGET"
# Set for every process of a job (ranks and scheduler, in env.sh): names the job a process belongs to.
JOB_MARKER_VAR = "LAUNCH_TRAIN_JOB_DIR"
# Set by the group that starts a process (not in env.sh): "<job dir>@<host name>", so a group's
# sweep never touches the processes of another "host" that happens to be this same machine.
GROUP_MARKER_VAR = "LAUNCH_TRAIN_GROUP"
RESTART_COUNT_VAR = "LAUNCH_TRAIN_RESTART_COUNT"
MAX_RESTARTS_VAR = "LAUNCH_TRAIN_MAX_RESTARTS"
CKPT_DIR_VAR = "LAUNCH_TRAIN_CKPT_DIR"
SAVE_SIGNAL_VAR = "LAUNCH_TRAIN_SAVE_SIGNAL"
SAVE_SIGNAL = "SIGUSR1"
PLANNED_RANKS_VAR = "LAUNCH_TRAIN_PLANNED_RANKS"
# Rank 0's working directory: collect-results, `make demo` and the README find checkpoints there.
CKPT_SUBDIR = "LOG0/ckpt"


def checkpoint_dir(job_dir: Path) -> Path:
    """The one checkpoint directory of a job (the same path for every rank, on every host)."""
    return Path(job_dir) / CKPT_SUBDIR


def job_env(job_dir: Path, *, platform: str, attempt: int, max_restarts: int, save_on_signal: bool = False
            ) -> dict[str, str]:
    """The variables every rank of a job gets, whatever its start mode."""
    env = {
        JOB_MARKER_VAR: str(job_dir),
        DEVICE_TARGET_VAR: platform,
        RESTART_COUNT_VAR: str(attempt),
        MAX_RESTARTS_VAR: str(max_restarts),
        CKPT_DIR_VAR: str(checkpoint_dir(job_dir)),
        "PYTHONUNBUFFERED": "1",  # log lines reach log.txt (and the live status) as they are printed
    }
    if save_on_signal:
        env[SAVE_SIGNAL_VAR] = SAVE_SIGNAL
    return env
