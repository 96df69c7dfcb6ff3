"""How ranks ended, as data: RankExit for every rank, RankFailure for the one that broke the job."""
from __future__ import annotations

import signal as signal_module
from dataclasses import dataclass
from typing import Optional, Sequence


def signal_name(number: Optional[int]) -> Optional[str]:
    if number is None:
        return None
    try:
        return signal_module.Signals(number).name
    except ValueError:
        return f"SIG{number}"


class HostLost(OSError):
    """A host's group could not be started (unreachable, its agent never reported): the host's fault."""

    def __init__(self, host: str, message: str) -> None:
        super().__init__(message)
        self.host = host


@dataclass(frozen=True)
class RankExit:
    """One rank's end. ``signal`` set when it was killed by a signal (then ``exit_code`` is None).

    stopped_by_launcher: the launcher stopped it because another rank failed (or Ctrl-C).
    """

    rank: int
    host: str
    exit_code: Optional[int]
    signal: Optional[int] = None
    started: Optional[str] = None
    ended: Optional[str] = None
    duration_s: Optional[float] = None
    stopped_by_launcher: bool = False

    def __post_init__(self) -> None:
        if (self.exit_code is None) == (self.signal is None):
            raise ValueError(f"rank {self.rank}: an exit has either an exit code or a signal")

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def signal_name(self) -> Optional[str]:
        return signal_name(self.signal)

    @property
    def status_code(self) -> int:
        """The shell convention: the exit code, or 128 + signal number."""
        return self.exit_code if self.exit_code is not None else 128 + int(self.signal)  # type: ignore[arg-type]

    @staticmethod
    def from_returncode(rank: int, host: str, returncode: int, **times: object) -> "RankExit":
        """subprocess-style return code (negative = killed by that signal) -> RankExit."""
        if returncode < 0:
            return RankExit(rank, host, None, -returncode, **times)  # type: ignore[arg-type]
        return RankExit(rank, host, returncode, None, **times)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RankFailure:
    """The rank that broke the job: where it ran, how it ended, where its log is, the log's last lines."""

    rank: int
    host: str
    exit_code: Optional[int]
    signal: Optional[int]
    log_path: str
    tail: str
    note: Optional[str] = None  # what the launcher saw besides the exit (e.g. its disk is full)

    @property
    def signal_name(self) -> Optional[str]:
        return signal_name(self.signal)

    @property
    def status_code(self) -> int:
        return self.exit_code if self.exit_code is not None else 128 + int(self.signal)  # type: ignore[arg-type]

    def describe(self) -> str:
        how = f"exit code {self.exit_code}" if self.exit_code is not None else f"killed by {self.signal_name}"
        note = f"; {self.note}" if self.note else ""
        return f"rank {self.rank} on {self.host} failed ({how}){note}; log: {self.log_path}"


class JobFailed(RuntimeError):
    """All failures of a job in one exception; the message names the first failing rank."""

    def __init__(self, failures: Sequence[RankFailure], message: Optional[str] = None) -> None:
        self.failures = tuple(failures)
        first = self.failures[0].describe() if self.failures else "job failed"
        super().__init__(message or first)
