"""SlurmStepGroup: every rank of a job as ONE srun step inside the current Slurm allocation.

A OneCommandGroup: ``srun.sh`` runs ``srun --nodes=N --ntasks-per-node=D --nodelist=<the
plan's nodes> --distribution=block --kill-on-bad-exit=1 bash slurm_rank.sh``; each task
runs the LOG<rank>/run.sh of the rank its SLURM_PROCID is and records that rank's exit
status in LOG<rank>/exit_status (srun reports one code for the step), so the first
failing rank is named as soon as it fails; Slurm itself kills the other tasks at once.
Dynamic mode's scheduler is a second, one-task step on the first node (``--overlap``: it
shares that node's CPUs with the ranks), started first: workers start once it listens, as
in a local launch.

Stopping (Ctrl-C, another group's failure, the end): SIGTERM to srun, which cancels its
step on every node through slurmstepd; SIGKILL after the grace; then ``scancel`` of any
step of this launch Slurm still lists, waiting until it lists none. Nothing is swept by
environment marker here: the tasks run on other machines and are Slurm's to end. The job
dir is on a file system every node sees (checked before start), so logs and exit
statuses are read right here.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Optional

from launcher.errors import LaunchError
from launcher.job.plan import Plan
from launcher.job.rank_env import JOB_MARKER_VAR
from launcher.job.render import RenderedFile, _render, template_environment
from launcher.run.local import SCHEDULER_LISTEN_TIMEOUT_S, wait_until_listening
from launcher.run.mpirun import OneCommandGroup
from launcher.run.process_tree import stop_trees

RANK_WRAPPER_TEMPLATE = "slurm/slurm_rank.sh.j2"
SRUN_TEMPLATE = "slurm/srun.sh.j2"
SCHEDULER_SRUN_LOG = "scheduler/srun.log"
STEP_GONE_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1


def step_name(plan: Plan, what: str) -> str:
    """--job-name of a step: names it in squeue/sacct and lets the clean-up find it."""
    return f"launch-train:{plan.spec.job_id}:{what}"


def rank_step_argv(plan: Plan) -> list[str]:
    """srun for the ranks: explicit nodes and tasks per node, block distribution, fail-fast."""
    nodes = [entry.host.name for entry in plan.hosts]
    per_node = len(plan.spec.devices)
    return ["srun", f"--nodes={len(nodes)}", f"--ntasks-per-node={per_node}", f"--ntasks={len(nodes) * per_node}",
            f"--nodelist={','.join(nodes)}", "--distribution=block", "--kill-on-bad-exit=1",
            f"--job-name={step_name(plan, 'ranks')}", "--unbuffered",
            "bash", str(plan.spec.job_dir / SlurmStepGroup.wrapper)]


def scheduler_step_argv(plan: Plan) -> list[str]:
    assert plan.scheduler is not None
    return ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={plan.scheduler.host}", "--overlap",
            f"--job-name={step_name(plan, 'scheduler')}",
            "bash", str(plan.spec.job_dir / plan.scheduler.log_dir / "run.sh")]


def render_step_files(plan: Plan) -> tuple[RenderedFile, ...]:
    """slurm_rank.sh and srun.sh; LaunchError (one line) on a template problem."""
    env = template_environment(plan.spec.templates_dir)
    common = {"plan": plan, "spec": plan.spec}
    return (RenderedFile(SlurmStepGroup.wrapper, _render(env, RANK_WRAPPER_TEMPLATE, **common), executable=True),
            RenderedFile(SlurmStepGroup.script, _render(env, SRUN_TEMPLATE, srun_argv=rank_step_argv(plan), **common),
                         executable=True))


def _term_with_launcher() -> None:
    """In srun before exec: SIGTERM it if the launcher dies (even by SIGKILL); srun then cancels its step."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


# What srun prints when Slurm fails a node under a step (a node that died or was set DOWN).
NODE_FAILURE = re.compile(r"srun: error: Node failure on (\S+)")


class SlurmStepGroup(OneCommandGroup):
    """All ranks of the plan, on every node of the allocation, as one supervised srun step."""

    script = "srun.sh"
    output = "srun.log"
    wrapper = "slurm_rank.sh"

    def __init__(self, plan: Plan, environ: Optional[Mapping[str, str]] = None) -> None:
        if plan.spec.mode == "mpirun":
            raise LaunchError("--launcher slurm --mode mpirun: one mpirun, which Open MPI starts through Slurm")
        super().__init__(plan)
        self._environ = dict(os.environ if environ is None else environ)
        self._files = render_step_files(plan)  # a template error stops the launch before anything starts
        self._scheduler_step: Optional[subprocess.Popen] = None

    def _popen(self, argv: list[str], log: Path) -> subprocess.Popen:
        env = dict(self._environ)
        env[JOB_MARKER_VAR] = str(self.job_dir)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            try:
                # A session of its own: a Ctrl-C on the terminal reaches the launcher only, which then
                # cancels the steps itself (srun would otherwise take a single SIGINT as "print status").
                return subprocess.Popen(argv, cwd=str(self.job_dir), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_term_with_launcher)
            except FileNotFoundError:
                raise OSError(f"{argv[0]}: not found (is this a Slurm client host?)") from None

    def _lost_hosts(self) -> "dict[str, str]":
        """Nodes srun said failed under this attempt's steps (its log is appended to on restarts)."""
        from launcher.run.logs import tail_lines

        lost = {}
        for log in (self.job_dir / self.output, self.job_dir / SCHEDULER_SRUN_LOG):
            this_attempt = tail_lines(log, 200).rsplit("==== launch-train: attempt", 1)[-1]
            for match in NODE_FAILURE.finditer(this_attempt):
                node = match.group(1).rstrip(".,;")
                if node in {entry.host.name for entry in self.plan.hosts}:
                    lost[node] = f"Slurm failed the node under the step ({match.group(0)})"
        return lost

    def _launch(self) -> None:
        mark = f"==== launch-train: attempt {self.plan.attempt} ====\n"
        for log in (self.job_dir / self.output, self.job_dir / SCHEDULER_SRUN_LOG):
            if log.exists():  # an earlier attempt's node failures are not this one's
                with open(log, "a") as out:
                    out.write(mark)
        for item in self._files:
            target = self.job_dir / item.path
            target.write_text(item.text)
            target.chmod(0o755)
        for rank in self.ranks:
            self._status_file(rank).unlink(missing_ok=True)  # a restart's ranks write new ones
        scheduler = self.plan.scheduler
        if scheduler is not None:
            self._scheduler_step = self._popen(scheduler_step_argv(self.plan), self.job_dir / SCHEDULER_SRUN_LOG)
            # Measured with MindSpore 2.10: a worker that finds no scheduler retries only ~25 s later.
            wait_until_listening(scheduler.address, scheduler.port, self._scheduler_step, SCHEDULER_LISTEN_TIMEOUT_S)
        self._proc = self._popen(["bash", str(self.job_dir / self.script)], self.job_dir / self.output)

    def _helper_problem(self) -> Optional[str]:
        step = self._scheduler_step
        if step is None or step.poll() is None or step.returncode == 0 or not self.pending_ranks():
            return None  # running, fine, or the ranks ended first (it then has nobody to wait for)
        return (f"the scheduler step on {self.plan.scheduler.host} ended with status {step.returncode} "
                f"(see {self.job_dir / 'scheduler' / 'log.txt'} and {self.job_dir / SCHEDULER_SRUN_LOG})")

    def _helpers_done(self) -> bool:
        return self._scheduler_step is None or self._scheduler_step.poll() is not None

    def _terminate(self, grace: float) -> None:
        # SIGTERM makes srun cancel its step on every node; stop_trees adds SIGKILL after the grace.
        leaders = [p.pid for p in (self._proc, self._scheduler_step) if p is not None and p.poll() is None]
        stop_trees(leaders, grace + 5.0)  # + Slurm's KillWait for the tasks to end
        for proc in (self._proc, self._scheduler_step):
            if proc is not None:
                proc.wait()
        self._cancel_leftover_steps()

    def _cancel_leftover_steps(self) -> None:
        """scancel any step of this launch Slurm still lists, and wait (bounded) until it lists none."""
        job_id = self._environ.get("SLURM_JOB_ID")
        if not job_id or self._proc is None:
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
        return [words[0] for words in (line.split() for line in out.splitlines()) if len(words) >= 2 and words[1] in names]

    def _where(self, rank: int) -> str:
        return f"{self.rank_host(rank)}:{self.log_file(rank)}"
