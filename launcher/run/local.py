"""LocalGroup: the ranks of one job on this machine, one process (session) each.

Each rank runs ``bash LOG<rank>/run.sh`` (the rendered script: cd, source env.sh, exec
the command with stdout+stderr appended to log.txt) under its keeper
(launcher/run/keeper.py: a child subreaper that kills whatever the rank started when
the rank ends or the launcher dies, however it hid), as the leader of its own session,
so a signal to the rank's process group reaches everything it started and nothing
else. The scheduler (dynamic mode) is started first, the same way, from scheduler/run.sh,
and the workers only once it listens.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

from launcher.job.plan import Plan
from launcher.job.rank_env import GROUP_MARKER_VAR, JOB_MARKER_VAR
from launcher.run.failures import RankExit
from launcher.run.group import ProcessGroup
from launcher.run.process_tree import group_marker, stop_trees, sweep_group

_PR_SET_PDEATHSIG = 1
# Measured with MindSpore 2.10: a worker that tries the scheduler before it listens retries
# only ~25 s later, so workers start once the scheduler's port answers (it imports MindSpore
# first, 1-3 s). A scheduler that never listens is reported by the supervisor, not waited for.
SCHEDULER_LISTEN_TIMEOUT_S = 60.0


def _die_with_launcher() -> None:
    """In the child before exec: SIGKILL it if the launcher dies (even by SIGKILL, which nothing can catch).

    The setting survives exec, so it covers the rank's program itself; what the rank
    starts in turn is stopped by the launcher's normal clean-up.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the launcher's own clean-up still applies


KEEPER = Path(__file__).with_name("keeper.py")
# ``python -S KEEPER ...`` would compile keeper.py on every start (a script's bytecode is never cached);
# imported, it comes from __pycache__: ~2 ms less per rank. The first argument is the directory the
# launcher package is in (-S: no site-packages), taken off argv before the keeper reads it.
_KEEPER_FROM_BYTECODE = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                         "from launcher.run.keeper import main; main(sys.argv[1:])")
_PACKAGE_ROOT = str(KEEPER.parent.parent.parent)


def keeper_argv(command: Sequence[str]) -> list[str]:
    """The command line that runs ``command`` under its keeper."""
    return [sys.executable, "-S", "-c", _KEEPER_FROM_BYTECODE, _PACKAGE_ROOT, *command]


def popen_script(script: Path, job_dir: Path, log_path: Path, host: str) -> subprocess.Popen:
    """``keeper bash script`` as a new session; early bash errors (before run.sh's own redirect) land in the log too."""
    env = dict(os.environ)
    env[JOB_MARKER_VAR] = str(job_dir)
    env[GROUP_MARKER_VAR] = group_marker(str(job_dir), host)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            keeper_argv(["bash", str(script)]),
            cwd=str(script.parent),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_launcher,
        )


def wait_until_listening(address: str, port: int, proc: Optional[subprocess.Popen], timeout_s: float) -> bool:
    """True once ``address:port`` accepts a connection; False when ``proc`` (if any) ended or time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class LocalGroup(ProcessGroup):
    """The ranks the plan puts on ``host`` (this machine), and the scheduler when it runs there.

    remote_scheduler_wait_s: when the scheduler runs on another host, wait up to this long for
    its port before starting the workers (the per-host agent does; 0: start at once).
    run_scheduler=False: the plan puts the scheduler on ``host`` but something else starts it
    (a Kubernetes job's own Scheduler pod, at the address the plan names; or another pod).
    """

    def __init__(self, plan: Plan, host: str, remote_scheduler_wait_s: float = 0.0, *,
                 run_scheduler: bool = True) -> None:
        super().__init__(plan, host, plan.ranks_on(host))
        self.remote_scheduler_wait_s = remote_scheduler_wait_s
        here = run_scheduler and plan.scheduler is not None and plan.scheduler.host == host
        self._scheduler = plan.scheduler if here else None
        self._scheduler_proc: Optional[subprocess.Popen] = None
        self._procs: dict[int, subprocess.Popen] = {}

    def _launch(self) -> None:
        if self._scheduler is not None:
            sched_dir = self.job_dir / self._scheduler.log_dir
            self._scheduler_proc = popen_script(sched_dir / "run.sh", self.job_dir, sched_dir / "log.txt", self.host)
            wait_until_listening(self._scheduler.address, self._scheduler.port, self._scheduler_proc,
                                 SCHEDULER_LISTEN_TIMEOUT_S)
        elif self.plan.scheduler is not None and self.ranks and self.remote_scheduler_wait_s > 0:
            # The scheduler runs on another host (its agent starts it): the same wait, from here.
            wait_until_listening(self.plan.scheduler.address, self.plan.scheduler.port, None,
                                 self.remote_scheduler_wait_s)
        for rank in self.ranks:
            self._procs[rank] = popen_script(self.rank_dir(rank) / "run.sh", self.job_dir, self.log_file(rank),
                                             self.host)

    def _observe(self) -> Iterable[RankExit]:
        for rank, proc in self._procs.items():
            code = proc.poll()
            if code is not None:
                yield self.exit_from_returncode(rank, code)

    def _terminate(self, grace: float) -> None:
        leaders = [proc.pid for proc in self._procs.values() if proc.poll() is None]
        if self._scheduler_proc is not None and self._scheduler_proc.poll() is None:
            leaders.append(self._scheduler_proc.pid)
        stop_trees(leaders, grace)
        for proc in self._procs.values():
            proc.wait()
        if self._scheduler_proc is not None:
            self._scheduler_proc.wait()
        sweep_group(str(self.job_dir), self.host)

    def _exit_after_stop(self, rank: int) -> RankExit:
        proc = self._procs.get(rank)
        if proc is None:  # never started (start() failed part-way)
            return super()._exit_after_stop(rank)
        return self.exit_from_returncode(rank, proc.wait())

    def _ask_to_save(self) -> bool:
        """SIGUSR1 to each running rank's keeper, which passes it to the rank (launcher/run/keeper.py)."""
        asked = False
        for proc in self._procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGUSR1)
                    asked = True
                except ProcessLookupError:
                    pass
        return asked

    def _helper_problem(self) -> Optional[str]:
        proc = self._scheduler_proc
        if proc is None:
            return None
        code = proc.poll()
        if code is None or code == 0:
            return None
        how = f"exit code {code}" if code > 0 else f"signal {-code}"
        return f"scheduler on {self.host} failed ({how}); log: {self.job_dir / 'scheduler' / 'log.txt'}"

    def _helpers_done(self) -> bool:
        return self._scheduler_proc is None or self._scheduler_proc.poll() is not None
