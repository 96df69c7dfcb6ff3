"""SlurmStepGroup: every rank of a job as ONE srun step inside the current Slurm allocation.

``srun --nodes=N --ntasks-per-node=D --nodelist=<the plan's nodes> --distribution=block
--kill-on-bad-exit=1 bash <job>/slurm_rank.sh``: each task runs the LOG<rank>/run.sh of
the rank its SLURM_PROCID is and records that rank's exit status in LOG<rank>/exit_status
(srun reports one code for the step), so the supervisor learns which rank failed first as
soon as it fails, as with mpirun. With --kill-on-bad-exit Slurm itself kills the other
tasks at once. Dynamic mode's scheduler is a second, one-task step on the first node
(``--overlap``: it shares that node's CPUs with the ranks).

Stopping (Ctrl-C, another group's failure, the end): SIGTERM to srun, which cancels its
step (every task on every node, through slurmstepd: nothing is left, wherever it ran);
after the grace, ``scancel`` of the steps, then waiting until Slurm no longer lists them.
The job dir is on a file system every node sees (checked before start by slurm_probe), so
logs and exit statuses are read right here.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Optional

from launcher.errors import LaunchError
from launcher.failures import RankExit
from launcher.job_record import utc_now
from launcher.log_follow import LogFollower, tail_lines
from launcher.mpirun_group import EXIT_STATUS_FILE, exit_from_status
from launcher.plan import JOB_MARKER_VAR, Plan
from launcher.rank_group import RankGroup
from launcher.render import RenderedFile, _render, template_environment

RANK_WRAPPER_TEMPLATE = "slurm/slurm_rank.sh.j2"
RANK_WRAPPER = "slurm_rank.sh"
SRUN_LOG = "srun.log"
_PR_SET_PDEATHSIG = 1
SCHEDULER_SRUN_LOG = "scheduler/srun.log"
STEP_GONE_TIMEOUT_S = 15.0


def step_name(plan: Plan, what: str) -> str:
    """--job-name of a step: names it in squeue/sacct and lets scancel find it."""
    return f"launch-train:{plan.spec.job_id}:{what}"


def rank_step_argv(plan: Plan) -> list[str]:
    """srun for the ranks: explicit nodes and tasks per node, block distribution, fail-fast."""
    nodes = [entry.host.name for entry in plan.hosts]
    per_node = len(plan.spec.devices)
    return ["srun", f"--nodes={len(nodes)}", f"--ntasks-per-node={per_node}", f"--ntasks={len(nodes) * per_node}",
            f"--nodelist={','.join(nodes)}", "--distribution=block", "--kill-on-bad-exit=1",
            f"--job-name={step_name(plan, 'ranks')}", "--unbuffered",
            "bash", str(plan.spec.job_dir / RANK_WRAPPER)]


def scheduler_step_argv(plan: Plan) -> list[str]:
    assert plan.scheduler is not None
    return ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={plan.scheduler.host}", "--overlap",
            f"--job-name={step_name(plan, 'scheduler')}",
            "bash", str(plan.spec.job_dir / plan.scheduler.log_dir / "run.sh")]


def render_rank_wrapper(plan: Plan) -> RenderedFile:
    env = template_environment(plan.spec.templates_dir)
    text = _render(env, RANK_WRAPPER_TEMPLATE, plan=plan, spec=plan.spec)
    return RenderedFile(RANK_WRAPPER, text, executable=True)


class SlurmStepGroup(RankGroup):
    """All ranks of the plan (on every node of the allocation) as one supervised srun step."""

    def __init__(self, plan: Plan, environ: Optional[Mapping[str, str]] = None) -> None:
        self.plan = plan
        self.job_dir = plan.spec.job_dir
        self.host = plan.hosts[0].host.name
        self.ranks = tuple(r.rank for r in plan.ranks)
        self._host_of = {r.rank: r.host for r in plan.ranks}
        self._environ = dict(os.environ if environ is None else environ)
        self._wrapper = render_rank_wrapper(plan)  # a template error stops the launch before anything starts
        self._ranks_step: Optional[subprocess.Popen] = None
        self._scheduler_step: Optional[subprocess.Popen] = None
        self._reported: set[int] = set()
        self._followers: dict[int, LogFollower] = {}
        self._started = ""
        self._started_mono = 0.0

    # -- start ---------------------------------------------------------------------------
    def _popen(self, argv: list[str], log: Path) -> subprocess.Popen:
        env = dict(self._environ)
        env[JOB_MARKER_VAR] = str(self.job_dir)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            try:
                # A session of its own: a Ctrl-C on the terminal reaches the launcher only, which then
                # cancels the steps itself (srun would otherwise see SIGINT and only print its status).
                return subprocess.Popen(argv, cwd=str(self.job_dir), env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_term_with_launcher)
            except FileNotFoundError:
                raise OSError(f"{argv[0]}: not found (is this a Slurm client host?)") from None

    def start(self) -> None:
        target = self.job_dir / self._wrapper.path
        target.write_text(self._wrapper.text)
        target.chmod(0o755)
        for rank in self.ranks:
            self._status_file(rank).unlink(missing_ok=True)
            self._followers[rank] = LogFollower.from_end(self.job_dir / f"LOG{rank}" / "log.txt")
        self._started = utc_now()
        self._started_mono = time.monotonic()
        # Ranks first: MindSpore workers keep retrying until the scheduler listens, and the ranks' step
        # is what the user waits for.
        self._ranks_step = self._popen(rank_step_argv(self.plan), self.job_dir / SRUN_LOG)
        if self.plan.scheduler is not None:
            self._scheduler_step = self._popen(scheduler_step_argv(self.plan), self.job_dir / SCHEDULER_SRUN_LOG)

    # -- watch ---------------------------------------------------------------------------
    def _status_file(self, rank: int) -> Path:
        return self.job_dir / f"LOG{rank}" / EXIT_STATUS_FILE

    def _times(self) -> dict:
        return {"started": self._started, "ended": utc_now(),
                "duration_s": round(time.monotonic() - self._started_mono, 3)}

    def _read_status(self, rank: int) -> Optional[tuple[int, int]]:
        """(mtime, status) once the rank's wrapper has written it."""
        path = self._status_file(rank)
        try:
            return path.stat().st_mtime_ns, int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def poll(self) -> tuple[RankExit, ...]:
        found = []
        for rank in self.ranks:
            if rank in self._reported:
                continue
            status = self._read_status(rank)
            if status is not None:
                self._reported.add(rank)
                found.append((status[0], exit_from_status(rank, self._host_of[rank], status[1], **self._times())))
        # Slurm kills the other tasks at once when one fails; the status written first is the first failure.
        exits = [exit_ for _, exit_ in sorted(found, key=lambda item: item[0])]
        code = self._ranks_step.poll() if self._ranks_step is not None else None
        if code is not None and not exits:
            # srun is gone; ranks that left no status were killed before their wrapper could write one.
            for rank in self.ranks:
                if rank not in self._reported:
                    self._reported.add(rank)
                    exits.append(RankExit.from_returncode(rank, self._host_of[rank], code if code != 0 else 1,
                                                          **self._times()))
        return tuple(exits)

    def helper_problem(self) -> Optional[str]:
        step = self._scheduler_step
        if step is None or step.poll() is None or step.returncode == 0:
            return None
        if len(self._reported) == len(self.ranks):
            return None  # the ranks ended first; the scheduler then has nobody to wait for
        return (f"the scheduler step on {self.plan.scheduler.host} ended with status {step.returncode} "
                f"(see {self.job_dir / 'scheduler' / 'log.txt'} and {self.job_dir / SCHEDULER_SRUN_LOG})")

    def helpers_done(self) -> bool:
        return self._scheduler_step is None or self._scheduler_step.poll() is not None

    # -- stop ----------------------------------------------------------------------------
    def close(self, grace: float) -> tuple[RankExit, ...]:
        steps = [s for s in (self._ranks_step, self._scheduler_step) if s is not None]
        for step in steps:
            if step.poll() is None:
                step.send_signal(signal.SIGTERM)  # srun cancels its step on every node
        deadline = time.monotonic() + max(grace, 0.0) + 5.0  # + Slurm's KillWait to end the tasks
        for step in steps:
            try:
                step.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                step.kill()
                step.wait()
        self._cancel_leftover_steps()
        stopped = []
        for rank in self.ranks:
            if rank in self._reported:
                continue
            self._reported.add(rank)
            status = self._read_status(rank)
            times = self._times()
            exit_ = (exit_from_status(rank, self._host_of[rank], status[1], **times) if status is not None
                     else RankExit(rank, self._host_of[rank], None, signal.SIGTERM.value, **times))
            stopped.append(dataclasses.replace(exit_, stopped_by_launcher=True))
        return tuple(stopped)

    def _cancel_leftover_steps(self) -> None:
        """scancel any step of this launch Slurm still lists, and wait until it lists none."""
        job_id = self._environ.get("SLURM_JOB_ID")
        if not job_id or self._ranks_step is None:
            return
        names = {step_name(self.plan, "ranks"), step_name(self.plan, "scheduler")}
        deadline = time.monotonic() + STEP_GONE_TIMEOUT_S
        cancelled = False
        while True:
            steps = self._listed_steps(job_id, names)
            if not steps or time.monotonic() > deadline:
                return
            if not cancelled:
                subprocess.run(["scancel", *steps], env=self._environ, capture_output=True, timeout=30)
                cancelled = True
            time.sleep(0.2)

    def _listed_steps(self, job_id: str, names: set[str]) -> list[str]:
        try:
            out = subprocess.run(["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"], env=self._environ,
                                 capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [line.split()[0] for line in out.splitlines() if len(line.split()) >= 2 and line.split()[1] in names]

    # -- logs ----------------------------------------------------------------------------
    def new_log_lines(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for rank, follower in self._followers.items():
            out.extend((rank, line) for line in follower.read_lines())
        return out

    def log_tail(self, rank: int, lines: int = 20) -> str:
        tail = tail_lines(self.job_dir / f"LOG{rank}" / "log.txt", lines)
        return tail or tail_lines(self.job_dir / SRUN_LOG, lines)

    def log_path(self, rank: int) -> str:
        return f"{self._host_of[rank]}:{self.job_dir / f'LOG{rank}' / 'log.txt'}"


def _term_with_launcher() -> None:
    """In srun before exec: SIGTERM it if the launcher dies (even by SIGKILL); srun then cancels its step."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def slurm_groups(environ: Optional[Mapping[str, str]] = None):
    """Group factory for launcher.launch: one step for the whole plan."""
    def factory(plan: Plan):
        if plan.spec.mode == "mpirun":
            raise LaunchError("--launcher slurm --mode mpirun: handled by Open MPI's own Slurm support")
        return [SlurmStepGroup(plan, environ)]
    return factory
