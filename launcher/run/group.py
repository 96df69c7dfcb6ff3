"""ProcessGroup: ranks of one job that are started, watched and stopped together.

The supervisor, the live status and the per-host agent drive every group alike:
``start()``, then ``poll()`` and ``new_log_lines()`` until the job is over, then
``close(grace)``; a failed rank is reported with ``log_path()`` and ``log_tail()``.
This base class owns that life cycle, once for every kind of group: which ranks were
reported (each exactly once), the times of each exit, marking the ranks the launcher
stopped, ``close()`` being safe to call twice, and following and tailing each rank's
``<job-dir>/<rank.log_dir>/log.txt``. A subclass says only how its processes are
started, observed and stopped (template method):

    _launch()                start every process; OSError when that is impossible
    _observe()               the RankExits that can be seen now (repeats are fine)
    _terminate(grace)        stop everything still running: SIGTERM, ``grace`` s, SIGKILL;
                             nothing of the group may outlive it
    _exit_after_stop(rank)   how a rank that was still running at close ended
                             (default: killed by SIGTERM)
    _helper_problem()        a helper process (the scheduler) that failed, else None
    _helpers_done()          True once no helper process runs
    _ask_to_save()           pass "save a checkpoint and stop" (SIGUSR1) to every running rank;
                             False when the group cannot (default)

and, for a group whose logs are not files on this machine (a remote host):
``_read_lines()``, ``_tail(rank, lines)``, ``_where(rank)``. A group whose news arrives on
another thread says so with ``report_news_to(activity)`` (launcher/run/activity.py): the
supervisor then visits it when it has news, not every tick.

Subclasses: ``launcher.run.local.LocalGroup`` (one session per rank, plus the dynamic
cluster's scheduler), ``launcher.run.mpirun.MpirunGroup`` (one ``mpirun`` for every rank,
on ``OneCommandGroup``: the shape for any launcher that starts all ranks with one
command and learns each rank's exit from the ``LOG<rank>/exit_status`` its wrapper
writes: ``srun`` is one more such class), ``launcher.remote.group.RemoteHostGroup``
(an agent over SSH, which itself runs a LocalGroup or MpirunGroup there).
"""
from __future__ import annotations

import dataclasses
import signal
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from launcher.job.job_json import utc_now
from launcher.run.failures import RankExit
from launcher.run.logs import LogFollower, tail_lines

if TYPE_CHECKING:
    from launcher.job.plan import Plan, Rank
    from launcher.run.activity import Activity

LOG_FILE = "log.txt"


class ProcessGroup(ABC):
    """start() -> poll()... -> close(grace). close() leaves no process of the group behind.

    host: the plan's name of the host the group runs on (mpirun: the first host).
    ranks: the rank numbers the group reports on.
    """

    # False for groups whose ranks' logs live on another machine (they override the log hooks).
    logs_are_local = True

    def __init__(self, plan: "Plan", host: str, ranks: Sequence["Rank"]) -> None:
        self.plan = plan
        self.host = host
        self.job_dir: Path = plan.spec.job_dir
        self._rank_plans = {rank.rank: rank for rank in ranks}
        self.ranks: tuple[int, ...] = tuple(self._rank_plans)
        self._reported: set[int] = set()
        self._followers: dict[int, LogFollower] = {}
        self._started = ""
        self._started_mono = 0.0
        self._closed = False

    # -- the life cycle (template methods; subclasses implement the hooks below) --------
    def start(self) -> None:
        """Start every process of the group; raises OSError when that is impossible."""
        if self.logs_are_local:
            # From the end: a restart appends to the same log.txt, only its new lines count.
            self._followers = {rank: LogFollower.from_end(self.log_file(rank)) for rank in self.ranks}
        self._started = utc_now()
        self._started_mono = time.monotonic()
        self._launch()

    def poll(self) -> tuple[RankExit, ...]:
        """Ranks that ended since the last poll, each reported once, in the order they ended."""
        if self._closed:
            return ()
        return tuple(self._take(self._observe()))

    def close(self, grace: float) -> tuple[RankExit, ...]:
        """Stop everything still running; the exits of ranks that were still running, marked stopped."""
        if self._closed:
            return ()
        self._closed = True
        self._terminate(grace)
        stopped = []
        for rank in self.ranks:
            if rank not in self._reported:
                self._reported.add(rank)
                stopped.append(dataclasses.replace(self._exit_after_stop(rank), stopped_by_launcher=True))
        return tuple(stopped)

    def report_news_to(self, activity: "Activity") -> bool:
        """True: from now on the group notes itself in ``activity`` whenever it has news (an exit, log
        lines, a problem), and the supervisor visits it only then and at its periodic sweep. False (the
        default): the group watches processes itself and is polled every tick."""
        return False

    def helper_problem(self) -> Optional[str]:
        """A message when a helper process (the scheduler) ended abnormally, else None."""
        return self._helper_problem()

    def helpers_done(self) -> bool:
        """True when no helper process is running (the scheduler exits after its workers)."""
        return self._helpers_done()

    def new_log_lines(self) -> list[tuple[int, str]]:
        """(rank, line) for every complete log line written since the last call."""
        return self._read_lines()

    def log_tail(self, rank: int, lines: int = 20) -> str:
        """The last lines of a rank's log (for the failure report)."""
        return self._tail(rank, lines)

    def log_path(self, rank: int) -> str:
        """Where the rank's log is, as the user should look for it (host:path for remote hosts)."""
        return self._where(rank)

    def lost_hosts(self) -> "dict[str, str]":
        """The hosts of this group that are gone (an agent lost, a node failed): name -> why
        (launcher/run/host_faults.py)."""
        return self._lost_hosts()

    def save_and_stop(self) -> bool:
        """Ask every running rank to save a checkpoint and stop (SIGUSR1, launch-train's preemption
        request); returns at once, False when this kind of group cannot pass it on."""
        if self._closed:
            return False
        return self._ask_to_save()

    def look_at(self, ranks: Sequence[int], title: str) -> dict:
        """Dump the stacks of these ranks into their LOG<rank>/stack.txt: {rank: RankLook} (hang watchdog)."""
        ranks = [rank for rank in ranks if rank in self._rank_plans]
        return self._look(ranks, title) if ranks else {}

    def remaining_log_lines(self) -> Iterable[list[tuple[int, str]]]:
        """Every log line not read yet, to the end of each log, in bounded batches (the last look)."""
        if not self.logs_are_local:
            yield self._read_lines()
            return
        for rank, follower in self._followers.items():
            for batch in follower.read_to_end():
                yield [(rank, line) for line in batch]

    # -- for subclasses ------------------------------------------------------------------
    def log_file(self, rank: int) -> Path:
        """The rank's log.txt in the job dir (its working directory is the plan's log_dir)."""
        return self.job_dir / self._rank_plans[rank].log_dir / LOG_FILE

    def pending_ranks(self) -> tuple[int, ...]:
        """Ranks whose end has not been reported yet."""
        return tuple(rank for rank in self.ranks if rank not in self._reported)

    def rank_dir(self, rank: int) -> Path:
        return self.job_dir / self._rank_plans[rank].log_dir

    def rank_host(self, rank: int) -> str:
        """The host a rank runs on (an mpirun group's ranks run on several)."""
        return self._rank_plans[rank].host

    def exit_from_returncode(self, rank: int, returncode: int) -> RankExit:
        """subprocess-style return code (negative: killed by that signal) -> RankExit timed from start()."""
        return RankExit.from_returncode(rank, self.rank_host(rank), returncode, **self._times())

    def exit_from_status(self, rank: int, status: int) -> RankExit:
        """A shell's exit status (128+N: killed by signal N) -> RankExit timed from start()."""
        if status > 128 and (status - 128) in {s.value for s in signal.Signals}:
            return RankExit(rank, self.rank_host(rank), None, status - 128, **self._times())
        return RankExit(rank, self.rank_host(rank), status, None, **self._times())

    def _times(self) -> dict:
        return {"started": self._started or None, "ended": utc_now(),
                "duration_s": round(time.monotonic() - self._started_mono, 3) if self._started else None}

    def _take(self, exits: Iterable[RankExit]) -> list[RankExit]:
        out = []
        for exit_ in exits:
            if exit_.rank in self._rank_plans and exit_.rank not in self._reported:
                self._reported.add(exit_.rank)
                out.append(exit_)
        return out

    # -- hooks ---------------------------------------------------------------------------
    @abstractmethod
    def _launch(self) -> None:
        """Start every process; OSError when that is impossible."""

    @abstractmethod
    def _observe(self) -> Iterable[RankExit]:
        """The exits that can be seen now (already reported ones are dropped by the base)."""

    @abstractmethod
    def _terminate(self, grace: float) -> None:
        """Stop everything still running; nothing of the group may be left afterwards."""

    def _exit_after_stop(self, rank: int) -> RankExit:
        return RankExit(rank, self.rank_host(rank), None, signal.SIGTERM.value, **self._times())

    def _helper_problem(self) -> Optional[str]:
        return None

    def _ask_to_save(self) -> bool:
        """Default: a group whose ranks cannot be signalled one by one (one mpirun/srun) stops as usual."""
        return False

    def _lost_hosts(self) -> "dict[str, str]":
        """Default: the group runs here; this machine is never "lost" to itself."""
        return {}

    def _helpers_done(self) -> bool:
        return True

    def _look(self, ranks: Sequence[int], title: str) -> dict:
        from launcher.run.hang import look_at_ranks  # psutil scans and py-spy only when a job hangs

        return look_at_ranks(self.job_dir, {rank: self.rank_host(rank) for rank in ranks}, title,
                             {rank: self._rank_plans[rank].log_dir for rank in ranks})

    def _read_lines(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for rank, follower in self._followers.items():
            out.extend((rank, line) for line in follower.read_lines())
        return out

    def _tail(self, rank: int, lines: int) -> str:
        return tail_lines(self.log_file(rank), lines)

    def _where(self, rank: int) -> str:
        return str(self.log_file(rank))
