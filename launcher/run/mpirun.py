"""MpirunGroup: all ranks of an mpirun-mode job, started by one ``mpirun`` on the first host.

mpirun runs ``mpi_rank.sh`` once per rank; that wrapper runs LOG<rank>/run.sh and
records the rank's exit status in LOG<rank>/exit_status, because mpirun itself reports
one code for the whole job. The supervisor watches those files, so it learns which rank
failed as soon as it fails, without waiting for mpirun's own clean-up. mpirun's own
output goes to <job-dir>/mpirun.log.
"""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

from launcher.run.failures import RankExit
from launcher.job.job_json import utc_now
from launcher.run.local import popen_script
from launcher.run.logs import LogFollower, tail_lines
from launcher.job.plan import Plan
from launcher.run.process_tree import stop_trees, sweep_group
from launcher.run.group import RankGroup

EXIT_STATUS_FILE = "exit_status"
MPIRUN_LOG = "mpirun.log"


def exit_from_status(rank: int, host: str, status: int, **times: object) -> RankExit:
    """bash reports a child killed by signal N as 128+N; turn that back into the signal."""
    if status > 128 and (status - 128) in {s.value for s in signal.Signals}:
        return RankExit(rank, host, None, status - 128, **times)  # type: ignore[arg-type]
    return RankExit(rank, host, status, None, **times)  # type: ignore[arg-type]


class MpirunGroup(RankGroup):
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.job_dir = plan.spec.job_dir
        self.host = plan.hosts[0].host.name
        self.ranks = tuple(r.rank for r in plan.ranks)
        self._host_of = {r.rank: r.host for r in plan.ranks}
        self._proc: Optional[subprocess.Popen] = None
        self._reported: set[int] = set()
        self._followers: dict[int, LogFollower] = {}
        self._started = ""
        self._started_mono = 0.0

    def _status_file(self, rank: int) -> Path:
        return self.job_dir / f"LOG{rank}" / EXIT_STATUS_FILE

    def start(self) -> None:
        for rank in self.ranks:
            self._status_file(rank).unlink(missing_ok=True)
            self._followers[rank] = LogFollower.from_end(self.job_dir / f"LOG{rank}" / "log.txt")
        self._started = utc_now()
        self._started_mono = time.monotonic()
        self._proc = popen_script(self.job_dir / "mpirun.sh", self.job_dir, self.job_dir / MPIRUN_LOG, self.host)

    def _times(self) -> dict:
        return {"started": self._started, "ended": utc_now(), "duration_s": round(time.monotonic() - self._started_mono, 3)}

    def _status_mtime(self, rank: int) -> int:
        try:
            return self._status_file(rank).stat().st_mtime_ns
        except OSError:
            return 0

    def _read_status(self, rank: int) -> Optional[int]:
        try:
            return int(self._status_file(rank).read_text().strip())
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
                found.append((self._status_mtime(rank), exit_from_status(rank, self._host_of[rank], status, **self._times())))
        # mpirun stops the other ranks itself once one fails; several statuses can appear between two
        # polls, and the one written first is the rank that failed first.
        exits = [exit_ for _, exit_ in sorted(found, key=lambda item: item[0])]
        code = self._proc.poll() if self._proc is not None else None
        if code is not None and not exits:
            # mpirun is gone; ranks that left no status never ran their wrapper to the end.
            missing = [r for r in self.ranks if r not in self._reported]
            for rank in missing:
                self._reported.add(rank)
                mpirun_status = code if code != 0 else 1
                exits.append(RankExit.from_returncode(rank, self._host_of[rank], mpirun_status, **self._times()))
        return tuple(exits)

    def helper_problem(self) -> Optional[str]:
        return None

    def helpers_done(self) -> bool:
        return self._proc is None or self._proc.poll() is not None

    def close(self, grace: float) -> tuple[RankExit, ...]:
        if self._proc is not None and self._proc.poll() is None:
            stop_trees([self._proc.pid], grace)
        if self._proc is not None:
            self._proc.wait()
        stopped = []
        for rank in self.ranks:
            if rank in self._reported:
                continue
            self._reported.add(rank)
            status = self._read_status(rank)
            times = self._times()
            exit_ = (
                exit_from_status(rank, self._host_of[rank], status, **times)
                if status is not None
                else RankExit(rank, self._host_of[rank], None, signal.SIGTERM.value, **times)
            )
            stopped.append(dataclasses.replace(exit_, stopped_by_launcher=True))
        sweep_group(str(self.job_dir), self.host)
        return tuple(stopped)

    def new_log_lines(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for rank, follower in self._followers.items():
            out.extend((rank, line) for line in follower.read_lines())
        return out

    def log_tail(self, rank: int, lines: int = 20) -> str:
        tail = tail_lines(self.job_dir / f"LOG{rank}" / "log.txt", lines)
        return tail or tail_lines(self.job_dir / MPIRUN_LOG, lines)

    def log_path(self, rank: int) -> str:
        return str(self.job_dir / f"LOG{rank}" / "log.txt")
