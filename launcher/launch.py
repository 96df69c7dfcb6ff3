"""``launch(spec) -> JobResult``: the library call behind launch-train.

Order of events, so that bad input never leaves anything behind:
plan (pure) -> render every file (pure; a template error stops here) -> check the job
directory and the scheduler port -> create the job directory, write job.json
("planned") and every rendered file -> start and supervise (job.json "running") ->
restart the whole group up to ``max_restarts`` times -> job.json with every rank's
outcome. The groups come from ``group_factory``, a backend's ``groups`` (launcher/backends/);
the default runs every rank on this machine. ``launcher.run_job.run_job(options)`` is the entry
that chooses the backend and gets here.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO

from launcher.errors import LaunchError
from launcher.job.disk_space import release_reserve
from launcher.run.failures import HostLost, JobFailed, RankExit, RankFailure
from launcher.atomic_write import AtomicBatch
from launcher.job.job_json import JobStatus, job_json_text, merge_exits, utc_now, write_job_json
from launcher.console import LiveStatus
from launcher.job.plan import Plan, plan_job, plan_restart
from launcher.job.ports import check_port_free
from launcher.job.resolve import check_job_dir_free
from launcher.run.group import ProcessGroup
from launcher.job.render import RenderedFile, render_job, render_rank_files
from launcher.job.spec import JobSpec
from launcher.run.supervisor import STOP_GRACE_S, AttemptOutcome, Interrupt, run_attempt

GroupFactory = Callable[[Plan], Sequence[ProcessGroup]]
# (spec, lost hosts -> why, attempt) -> the next attempt's spec, or None to restart on the same hosts
Replan = Callable[[JobSpec, dict, int], Optional[JobSpec]]


class LaunchInterrupted(Exception):
    """Ctrl-C (or SIGTERM/SIGHUP) before any rank started: nothing was written; exit 128 + signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class JobResult:
    """How a job ended. ``exit_code`` is what launch-train exits with."""

    plan: Optional[Plan]  # None: the job was submitted, or never started
    state: str
    exit_code: int
    restarts: int
    exits: tuple[RankExit, ...]
    first_failure: Optional[RankFailure] = None
    problem: Optional[str] = None
    # For the person at the terminal when the supervisor did not say it already (a job that never started).
    message: Optional[str] = None

    @classmethod
    def without_plan(cls, state: str, exit_code: int, message: Optional[str] = None) -> "JobResult":
        return cls(plan=None, state=state, exit_code=exit_code, restarts=0, exits=(), message=message)

    @property
    def job_dir(self) -> Optional[Path]:
        return self.plan.spec.job_dir if self.plan is not None else None

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"

    def check(self) -> "JobResult":
        """Raise JobFailed (naming the first failing rank) unless the job succeeded."""
        if not self.succeeded:
            failures = [self.first_failure] if self.first_failure else []
            raise JobFailed(failures, None if failures else (self.problem or f"job {self.state}"))
        return self


def prepare(spec: JobSpec) -> tuple[Plan, tuple[RenderedFile, ...]]:
    """Plan and render; pure, raises LaunchError on anything the user can fix."""
    try:
        plan = plan_job(spec)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    return plan, render_job(plan)


class JobDirWriteError(OSError):
    """The job dir could not be written (disk full, read-only); nothing of it was kept. One line."""


def write_job_files(plan: Plan, files: Sequence[RenderedFile], status: JobStatus = JobStatus()) -> None:
    """Create the job directory whole or not at all: job.json, every rendered file, the disk reserve.

    Everything is written into a hidden sibling and renamed into place at the end, so a
    disk that fills up half-way leaves nothing that would block the rerun. A job dir that
    already holds files --submit prepared (the batch script, Slurm's output file, which
    Slurm keeps open) is written in place instead, and what was written is removed again
    on failure.
    """
    import shutil
    import tempfile

    job_dir = plan.spec.job_dir
    if job_dir.is_dir() and any(job_dir.iterdir()):
        _write_into_prepared(plan, files, status)
        return
    try:
        job_dir.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{job_dir.name}.partial-", dir=job_dir.parent))
    except OSError as exc:
        raise JobDirWriteError(f"--job-dir {job_dir}: cannot create it: {exc.strerror or exc}; nothing was written") from None
    try:
        os.chmod(stage, 0o755)
        _write_all(plan, files, stage, [], status)
        if job_dir.exists():
            job_dir.rmdir()  # checked empty before; a file that appeared since makes this fail
        os.rename(stage, job_dir)
    except _WriteFailed as failed:
        shutil.rmtree(stage, ignore_errors=True)
        raise JobDirWriteError(f"--job-dir {job_dir}: cannot write {failed.what}: {failed.reason}; nothing was kept") from None
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise JobDirWriteError(f"--job-dir {job_dir}: cannot create it: {exc.strerror or exc}; nothing was kept") from None


class _WriteFailed(Exception):
    def __init__(self, what: str, reason: str) -> None:
        super().__init__(what)
        self.what, self.reason = what, reason


def _write_all(plan: Plan, files: Sequence[RenderedFile], root: Path, made: list[Path],
               status: JobStatus = JobStatus()) -> None:
    """job.json, the rendered files and the reserve under root; every path created is appended to made."""
    from launcher.job.disk_space import RESERVE_FILE, write_reserve

    current = "job.json"
    try:
        # One batch: every file written, then made durable and renamed into place together (one sync
        # of the file system instead of an fsync per file: launcher/atomic_write.py).
        with AtomicBatch() as batch:
            if not (root / "job.json").exists():
                made.append(root / "job.json")
            batch.write(root / "job.json", job_json_text(plan, status))
            for item in files:
                current = item.path
                target = root / item.path
                for parent in reversed(target.relative_to(root).parents[:-1]):
                    if not (root / parent).exists():
                        (root / parent).mkdir()
                        made.append(root / parent)
                if not target.exists():
                    made.append(target)
                batch.write(target, item.text, executable=item.executable)
            current = "the job's files"
        current = "a reserve for job.json"
        made.append(root / RESERVE_FILE)
        write_reserve(root)
    except OSError as exc:
        raise _WriteFailed(current, exc.strerror or str(exc)) from None


def _write_into_prepared(plan: Plan, files: Sequence[RenderedFile], status: JobStatus) -> None:
    job_dir = plan.spec.job_dir
    made: list[Path] = []
    try:
        _write_all(plan, files, job_dir, made, status)
    except _WriteFailed as failed:
        for path in reversed(made):  # files first, then the directories made for them
            try:
                path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
            except OSError:
                pass
        raise JobDirWriteError(f"--job-dir {job_dir}: cannot write {failed.what}: {failed.reason}; "
                               "nothing of it was kept") from None


def launch(
    spec: JobSpec,
    *,
    group_factory: Optional[GroupFactory] = None,
    replan: Optional[Replan] = None,
    host_changes: Optional[Callable[[], dict]] = None,
    out: Optional[TextIO] = None,
    status_out: Optional[TextIO] = None,
    is_tty: Optional[bool] = None,
    plain_interval: float = 30.0,
    grace: float = STOP_GRACE_S,
    interrupt: Optional[Interrupt] = None,
) -> JobResult:
    """Run the job described by ``spec`` to the end; bad input raises LaunchError before anything starts.

    ``replan(spec, lost, attempt)``: the next attempt's spec when an attempt lost hosts (a backend's
    spares, or fewer hosts); ``host_changes()``: what job.json then records about them.
    """
    if group_factory is None:
        from launcher.backends.local import LocalBackend

        group_factory = LocalBackend().groups
    out = out if out is not None else sys.stdout
    status_out = status_out if status_out is not None else sys.stderr
    plan, files = prepare(spec)
    resuming = spec.first_attempt > 0
    earlier = _earlier_launches(spec.job_dir) if resuming else ()
    if not resuming:
        check_job_dir_free(spec.job_dir, spec.prepared_files)
    if plan.scheduler is not None and spec.hosts[0].local:
        check_port_free(plan.scheduler.port, plan.scheduler.address)
    interrupt = interrupt or Interrupt()
    restore = _install_signal_handlers(interrupt)  # from here a Ctrl-C is an orderly stop, never a traceback
    written = False
    try:
        groups = group_factory(plan)  # may raise LaunchError (e.g. an unreachable host) before files exist
        if interrupt.signal is None:
            write_job_files(plan, files, JobStatus(earlier_launches=earlier))
            written = True
    except BaseException:
        restore()
        raise
    if not written:
        restore()
        raise LaunchInterrupted(f"interrupted before the job started (signal {interrupt.signal}); nothing was written",
                                128 + int(interrupt.signal or signal.SIGINT))
    # Interrupted from here on: the job dir exists, so it is run to an orderly "interrupted" end.
    started = utc_now()
    t0 = time.monotonic()
    all_exits: tuple[RankExit, ...] = ()
    hangs: list[dict] = []
    history = _History(earlier, host_changes)
    restarts = 0
    try:
        if resuming:
            _mark_logs(plan, f"resume (attempt {plan.attempt})")
        write_job_json(spec.job_dir, plan, history.status(state="running", started=started))
        while True:
            status = LiveStatus(
                plan, tee=sorted(spec.tee), out=out, status_out=status_out, is_tty=is_tty, plain_interval=plain_interval
            )
            attempt_started = utc_now()

            def on_straggler(record: dict, plan: Plan = plan, restarts: int = restarts) -> None:
                # Said at once, and in job.json while the job runs (launch-train --status shows it).
                from launcher.run.stragglers import describe

                history.stragglers.append({**record, "attempt": plan.attempt})
                _say(status_out, describe(record))
                write_job_json(spec.job_dir, plan, history.status(state="running", started=started,
                                                                  restarts=restarts))

            try:
                outcome = run_attempt(groups, status=status, interrupt=interrupt, grace=grace, hang=spec.hang,
                                      restarts_left=spec.max_restarts - restarts, save_grace_s=spec.save_grace_s,
                                      on_straggler=on_straggler)
            except HostLost as lost:
                # A host that cannot even start its ranks is lost like one that dies later.
                outcome = AttemptOutcome("failed", (), helper_problem=str(lost), lost_hosts={lost.host: str(lost)})
            except OSError:
                # A group could not start (every group is closed by now): job.json must not say "running".
                failed = history.status(state="failed", started=started, ended=utc_now(), exit_code=1,
                                        restarts=restarts, wall_time_s=round(time.monotonic() - t0, 3),
                                        rank_exits=all_exits)
                write_job_json(spec.job_dir, plan, failed)
                raise
            all_exits = merge_exits(all_exits, outcome.exits)
            what = _what_failed(outcome.first_failure, outcome.helper_problem, outcome.state)
            history.attempt(plan, attempt_started, outcome, what)
            if outcome.hang is not None:
                hangs.append(outcome.hang.record)
                stacks = sorted({r["stack"] for r in outcome.hang.record["ranks"] if r.get("stack")})
                _say(status_out, f"every rank's stack: {', '.join(stacks) if stacks else 'none could be read'}"
                                 f" (in {spec.job_dir})")
            if outcome.state != "failed" or restarts >= spec.max_restarts:
                break
            restarts += 1
            try:
                next_plan, where = _next_plan(plan, outcome.lost_hosts, replan)
            except LaunchError as exc:  # a lost host and no way on without it
                restarts -= 1
                _say(status_out, f"{what}; cannot restart: {exc}")
                break
            _say(status_out, f"{what}; restarting the whole job{where} ({restarts} of {spec.max_restarts})")
            try:
                _write_next_attempt(next_plan, restarts, started, history, same_hosts=not where)
            except OSError as exc:  # a full disk: end with the failure we have, and say why there is no restart
                restarts -= 1
                _say(status_out, f"cannot restart: {exc.filename or spec.job_dir}: {exc.strerror or exc}")
                break
            plan = next_plan
            groups = group_factory(plan)
        result = _result(plan, outcome, restarts, all_exits)
        final = history.status(
            state=result.state,
            started=started,
            ended=utc_now(),
            wall_time_s=round(time.monotonic() - t0, 3),
            exit_code=result.exit_code,
            restarts=restarts,
            rank_exits=all_exits,
            first_failure=result.first_failure,
            hang=_hang_status(hangs),
            preempted=outcome.preempted,
        )
        try:
            write_job_json(spec.job_dir, plan, final)
        except OSError as exc:
            _report(status_out, result)
            raise JobDirWriteError(f"{spec.job_dir / 'job.json'}: cannot record how the job ended: "
                                   f"{exc.strerror or exc}") from None
        release_reserve(spec.job_dir)
        _report(status_out, result)
    finally:
        restore()
    return result


# What timeout(1) exits with: the job did not fail by itself, it stopped making progress.
HUNG_EXIT_CODE = 124


def _hang_status(hangs: list[dict]) -> Optional[dict]:
    """job.json status.hang: the last hang, with the earlier ones (restarted attempts) listed under it."""
    if not hangs:
        return None
    last = dict(hangs[-1])
    if len(hangs) > 1:
        last["earlier"] = hangs[:-1]
    return last


def _result(plan: Plan, outcome: AttemptOutcome, restarts: int, exits: tuple[RankExit, ...]) -> JobResult:
    if outcome.state == "succeeded":
        code = 0
    elif outcome.hang is not None:
        code = HUNG_EXIT_CODE
    elif outcome.state == "interrupted":
        code = 128 + int(outcome.signal_received or signal.SIGINT)
    elif outcome.first_failure is not None:
        code = outcome.first_failure.status_code
    else:
        code = 1
    return JobResult(
        plan=plan,
        state=outcome.state,
        exit_code=code,
        restarts=restarts,
        exits=exits,
        first_failure=outcome.first_failure,
        problem=outcome.helper_problem,
    )


def _what_failed(first_failure: Optional[RankFailure], problem: Optional[str], state: str) -> str:
    if first_failure is not None:
        return first_failure.describe()
    return problem or f"job {state}"


def _report(stream: TextIO, result: JobResult) -> None:
    job_dir = result.job_dir
    if result.succeeded:
        _say(stream, f"job {result.plan.spec.job_id} succeeded: {result.plan.rank_size} ranks; job dir {job_dir}")
        return
    if result.state == "interrupted":
        _say(stream, f"interrupted: every rank stopped; job dir {job_dir} (exit {result.exit_code})")
        return
    _say(stream, _what_failed(result.first_failure, result.problem, result.state))
    failure = result.first_failure
    if failure is not None and failure.tail:
        _say(stream, f"last lines of {failure.log_path}:")
        stream.write("".join(f"    {line}\n" for line in failure.tail.splitlines()))
    _say(stream, f"every other rank was stopped; job dir {job_dir} (exit {result.exit_code})")
    stream.flush()


def _say(stream: TextIO, message: str) -> None:
    stream.write(f"launch-train: {message}\n")
    stream.flush()


class _History:
    """What job.json's status says about the whole launch: earlier launches, every attempt, host changes."""

    def __init__(self, earlier: Sequence[dict], host_changes: Optional[Callable[[], dict]]) -> None:
        self.earlier = tuple(earlier)
        self.attempts: list[dict] = []
        self.stragglers: list[dict] = []
        self.host_changes = host_changes

    def attempt(self, plan: Plan, started: str, outcome: AttemptOutcome, what: str) -> None:
        self.attempts.append({
            "attempt": plan.attempt, "started": started, "ended": utc_now(), "state": outcome.state,
            "cause": None if outcome.state == "succeeded" else what,
            "lost_hosts": dict(outcome.lost_hosts), "hosts": [entry.host.name for entry in plan.hosts],
        })

    def status(self, **fields) -> JobStatus:
        changes = self.host_changes() if self.host_changes is not None else {}
        return JobStatus(**fields, earlier_launches=self.earlier, attempts=tuple(self.attempts),
                         excluded_hosts=tuple(changes.get("excluded_hosts", ())),
                         spare_hosts=tuple(changes.get("spare_hosts", ())), stragglers=tuple(self.stragglers))


def _next_plan(plan: Plan, lost: dict, replan: Optional[Replan]) -> tuple[Plan, str]:
    """The next attempt's plan, and (when hosts changed) how, for the console. LaunchError: no way on."""
    new_spec = replan(plan.spec, lost, plan.attempt) if (lost and replan is not None) else None
    if new_spec is None:
        return plan_restart(plan), ""
    next_plan = plan_job(new_spec, attempt=plan.attempt + 1)
    gone = ", ".join(sorted(lost))
    return next_plan, (f" without {gone} (lost) on {', '.join(h.host.name for h in next_plan.hosts)}")


def _write_next_attempt(plan: Plan, restarts: int, started: str, history: _History, *, same_hosts: bool) -> None:
    job_dir = plan.spec.job_dir
    # Same hosts: only env.sh/run.sh change (the new LAUNCH_TRAIN_RESTART_COUNT). Other hosts: every file
    # (rank table, hostfile, the scheduler's script and address).
    with AtomicBatch() as batch:
        for item in (render_rank_files(plan) if same_hosts else render_job(plan)):
            target = job_dir / item.path
            target.parent.mkdir(parents=True, exist_ok=True)
            batch.write(target, item.text, executable=item.executable)
    _mark_logs(plan, f"restart {restarts}")
    write_job_json(job_dir, plan, history.status(state="running", started=started, restarts=restarts))


def _mark_logs(plan: Plan, what: str) -> None:
    """A line in every rank's log where a new attempt's output starts (logs are appended to)."""
    for rank in plan.ranks:
        with open(plan.spec.job_dir / rank.log_dir / "log.txt", "a", encoding="utf-8") as log:
            log.write(f"==== launch-train: {what}: {' '.join(rank.command)} ====\n")


def _earlier_launches(job_dir: Path) -> tuple[dict, ...]:
    """The status of every earlier launch of this job dir (launch-train --resume keeps them in order)."""
    from launcher.job.job_record import JobFileError, load_job

    try:
        status = dict(load_job(job_dir).status)
    except JobFileError:
        return ()
    before = tuple(status.pop("earlier_launches", None) or ())
    status.pop("ranks", None)  # every rank's exit is in the rank logs; the record stays small
    return (*before, status)


def _install_signal_handlers(interrupt: Interrupt) -> Callable[[], None]:
    """SIGINT/SIGTERM stop the job cleanly instead of killing the launcher mid-way (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    # SIGHUP (the terminal or the SSH session went away) stops the job like SIGTERM: left at its
    # default it would kill the launcher and leave the ranks running and job.json "running".
    # SIGUSR1: Slurm's --signal=B:USR1@T and similar "you will be preempted" notices: save and stop.
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: interrupt.trigger(signum))

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
