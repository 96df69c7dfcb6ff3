"""RankGroup: the ranks of one job that run on one host, started and stopped together.

The supervisor only talks to this interface, so local processes (LocalRankGroup), one
mpirun (MpirunGroup) and ranks on another machine over SSH (the multi-host support's
remote group, which runs a LocalRankGroup in an agent there) are supervised alike.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

from launcher.run.failures import RankExit


class RankGroup(ABC):
    """A set of rank processes (plus helpers such as the scheduler) with one life cycle.

    start() -> poll() repeatedly -> close(). close() must leave no process of the group
    behind, whatever state the group is in, and may be called more than once.
    """

    host: str
    ranks: tuple[int, ...]

    @abstractmethod
    def start(self) -> None:
        """Start every process of the group; raises OSError when that is impossible."""

    @abstractmethod
    def poll(self) -> tuple[RankExit, ...]:
        """Ranks that ended since the last poll (each rank is reported once)."""

    @abstractmethod
    def helper_problem(self) -> Optional[str]:
        """A message when a helper process (the scheduler) ended abnormally, else None."""

    @abstractmethod
    def helpers_done(self) -> bool:
        """True when no helper process is running (the scheduler exits after its workers)."""

    @abstractmethod
    def close(self, grace: float) -> tuple[RankExit, ...]:
        """Stop everything still running (SIGTERM, ``grace`` s, SIGKILL of every tree).

        Returns the exits of ranks that were still running, marked stopped_by_launcher.
        """

    @abstractmethod
    def new_log_lines(self) -> list[tuple[int, str]]:
        """(rank, line) for every complete log line written since the last call."""

    @abstractmethod
    def log_tail(self, rank: int, lines: int = 20) -> str:
        """The last lines of a rank's log (for the failure report)."""

    @abstractmethod
    def log_path(self, rank: int) -> str:
        """Where the rank's log is, as the user should look for it (host:path for remote hosts)."""
