"""Running one attempt of a job: start every group, watch every rank, stop everything at the end.

The first rank that exits non-zero (or is killed) ends the attempt: every other rank
is stopped (SIGTERM, ``grace`` s, SIGKILL of the whole tree) and the failure is
returned as data. SIGINT/SIGTERM to the launcher set ``interrupt`` and end the attempt
the same way. Whatever happens, close() runs on every group: nothing is left behind.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

from launcher.run.failures import RankExit, RankFailure
from launcher.console import LiveStatus
from launcher.run.group import ProcessGroup

POLL_INTERVAL_S = 0.02
STOP_GRACE_S = 2.5
SCHEDULER_EXIT_WAIT_S = 1.5
TAIL_LINES = 20


@dataclass(frozen=True)
class AttemptOutcome:
    """state: succeeded | failed | interrupted. ``signal_received``: what interrupted the launcher."""

    state: str
    exits: tuple[RankExit, ...]
    first_failure: Optional[RankFailure] = None
    helper_problem: Optional[str] = None
    signal_received: Optional[int] = None


class Interrupt:
    """Set from a signal handler; the supervisor sleeps on it so it wakes at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: Optional[int] = None

    def trigger(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
        self.event.set()


def run_attempt(
    groups: Sequence[ProcessGroup],
    *,
    status: Optional[LiveStatus] = None,
    interrupt: Optional[Interrupt] = None,
    grace: float = STOP_GRACE_S,
    poll_interval: float = POLL_INTERVAL_S,
) -> AttemptOutcome:
    interrupt = interrupt or Interrupt()
    total = sum(len(g.ranks) for g in groups)
    exits: dict[int, RankExit] = {}
    first: Optional[RankExit] = None
    first_group: Optional[ProcessGroup] = None
    problem: Optional[str] = None
    try:
        for group in groups:
            group.start()
        while first is None and problem is None and interrupt.signal is None:
            for group in groups:
                for exit_ in group.poll():
                    exits[exit_.rank] = exit_
                    if status is not None:
                        status.mark(exit_.rank, "done" if exit_.ok else "FAILED")
                    if not exit_.ok and first is None:
                        first, first_group = exit_, group
                problem = problem or group.helper_problem()
            if len(exits) == total and first is None:
                _wait_for_helpers(groups, interrupt)
                break
            if status is not None:
                status.tick(groups)
            interrupt.event.wait(poll_interval)
    finally:
        for group in groups:
            for exit_ in group.close(grace):
                exits.setdefault(exit_.rank, exit_)
                if status is not None:
                    status.mark(exit_.rank, "stopped")
        if status is not None:
            status.finish(groups)

    ordered = tuple(exits[k] for k in sorted(exits))
    if first is not None and first_group is not None:
        failure = RankFailure(
            rank=first.rank,
            host=first.host,
            exit_code=first.exit_code,
            signal=first.signal,
            log_path=first_group.log_path(first.rank),
            tail=first_group.log_tail(first.rank, TAIL_LINES),
        )
        return AttemptOutcome("failed", ordered, first_failure=failure)
    if problem is not None:
        return AttemptOutcome("failed", ordered, helper_problem=problem)
    if interrupt.signal is not None:
        return AttemptOutcome("interrupted", ordered, signal_received=interrupt.signal)
    return AttemptOutcome("succeeded", ordered)


def _wait_for_helpers(groups: Sequence[ProcessGroup], interrupt: Interrupt) -> None:
    """All ranks finished: give the scheduler a moment to see them unregister and exit by itself."""
    deadline = time.monotonic() + SCHEDULER_EXIT_WAIT_S
    while time.monotonic() < deadline and interrupt.signal is None:
        if all(g.helpers_done() for g in groups):
            return
        interrupt.event.wait(0.05)
