"""LocalRankGroup: ranks of one job on this machine, one process (session) each.

Each rank runs ``bash LOG<rank>/run.sh`` (the rendered script: cd, source env.sh, exec
the command with stdout+stderr appended to log.txt) as the leader of its own session,
so a signal to the rank's process group reaches everything it started and nothing
else. The scheduler (dynamic mode) is started first, the same way, from scheduler/run.sh.
"""
from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from launcher.run.failures import RankExit
from launcher.job.job_json import utc_now
from launcher.run.logs import LogFollower, tail_lines
from launcher.job.plan import Plan, Rank
from launcher.job.rank_env import GROUP_MARKER_VAR, JOB_MARKER_VAR
from launcher.run.process_tree import group_marker, stop_trees, sweep_group
from launcher.run.group import RankGroup


@dataclass
class _Running:
    rank: Rank
    proc: subprocess.Popen
    started: str
    started_mono: float
    follower: LogFollower
    reported: bool = False


_PR_SET_PDEATHSIG = 1


def _die_with_launcher() -> None:
    """In the child before exec: SIGKILL it if the launcher dies (even by SIGKILL, which nothing can catch).

    The setting survives exec, so it covers the rank's program itself; what the rank
    starts in turn is stopped by the launcher's normal clean-up.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the launcher's own clean-up still applies


def popen_script(script: Path, job_dir: Path, log_path: Path, host: str) -> subprocess.Popen:
    """``bash script`` as a new session; early bash errors (before run.sh's own redirect) land in the log too."""
    env = dict(os.environ)
    env[JOB_MARKER_VAR] = str(job_dir)
    env[GROUP_MARKER_VAR] = group_marker(str(job_dir), host)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            ["bash", str(script)],
            cwd=str(script.parent),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_die_with_launcher,
        )


class LocalRankGroup(RankGroup):
    def __init__(self, plan: Plan, host: str) -> None:
        self.plan = plan
        self.host = host
        self.job_dir = plan.spec.job_dir
        self._ranks: tuple[Rank, ...] = plan.ranks_on(host)
        self.ranks = tuple(r.rank for r in self._ranks)
        self._scheduler = plan.scheduler if (plan.scheduler is not None and plan.scheduler.host == host) else None
        self._scheduler_proc: Optional[subprocess.Popen] = None
        self._running: dict[int, _Running] = {}

    def start(self) -> None:
        if self._scheduler is not None:
            sched_dir = self.job_dir / self._scheduler.log_dir
            self._scheduler_proc = popen_script(sched_dir / "run.sh", self.job_dir, sched_dir / "log.txt", self.host)
        for rank in self._ranks:
            log_dir = self.job_dir / rank.log_dir
            follower = LogFollower.from_end(log_dir / "log.txt")
            proc = popen_script(log_dir / "run.sh", self.job_dir, log_dir / "log.txt", self.host)
            self._running[rank.rank] = _Running(rank, proc, utc_now(), time.monotonic(), follower)

    def poll(self) -> tuple[RankExit, ...]:
        exits = []
        for item in self._running.values():
            if item.reported:
                continue
            code = item.proc.poll()
            if code is not None:
                item.reported = True
                exits.append(self._exit(item, code))
        return tuple(exits)

    def _exit(self, item: _Running, code: int, stopped: bool = False) -> RankExit:
        exit_ = RankExit.from_returncode(
            item.rank.rank,
            self.host,
            code,
            started=item.started,
            ended=utc_now(),
            duration_s=round(time.monotonic() - item.started_mono, 3),
        )
        if stopped:
            exit_ = dataclasses.replace(exit_, stopped_by_launcher=True)
        return exit_

    def helper_problem(self) -> Optional[str]:
        proc = self._scheduler_proc
        if proc is None:
            return None
        code = proc.poll()
        if code is None or code == 0:
            return None
        how = f"exit code {code}" if code > 0 else f"signal {-code}"
        return f"scheduler on {self.host} failed ({how}); log: {self.job_dir / 'scheduler' / 'log.txt'}"

    def helpers_done(self) -> bool:
        return self._scheduler_proc is None or self._scheduler_proc.poll() is not None

    def close(self, grace: float) -> tuple[RankExit, ...]:
        leaders = [i.proc.pid for i in self._running.values() if i.proc.poll() is None]
        if self._scheduler_proc is not None and self._scheduler_proc.poll() is None:
            leaders.append(self._scheduler_proc.pid)
        stop_trees(leaders, grace)
        stopped = []
        for item in self._running.values():
            code = item.proc.wait()
            if not item.reported:
                item.reported = True
                stopped.append(self._exit(item, code, stopped=True))
        if self._scheduler_proc is not None:
            self._scheduler_proc.wait()
        sweep_group(str(self.job_dir), self.host)
        return tuple(stopped)

    def new_log_lines(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for number, item in self._running.items():
            out.extend((number, line) for line in item.follower.read_lines())
        return out

    def log_tail(self, rank: int, lines: int = 20) -> str:
        return tail_lines(self.job_dir / f"LOG{rank}" / "log.txt", lines)

    def log_path(self, rank: int) -> str:
        return str(self.job_dir / f"LOG{rank}" / "log.txt")

