"""Running one attempt of a job: start every group, watch every rank, stop everything at the end.

The first rank that exits non-zero (or is killed) ends the attempt: every other rank
is stopped (SIGTERM, ``grace`` s, SIGKILL of the whole tree) and the failure is
returned as data. SIGINT/SIGTERM/SIGHUP to the launcher set ``interrupt`` and end the
attempt the same way. A hang ends it too: the supervisor reads every rank's new log
lines (for the live status and for the hang watchdog, launcher/run/watchdog.py); when
the watchdog says a rank made no step within its timeout, every rank's stack is dumped
(launcher/run/hang.py), the stuck ranks are named, and the attempt ends as "failed"
with a HangReport. Whatever happens, close() runs on every group: nothing is left behind.

The supervisor's work follows what happens, not the host count. Groups that watch processes
on this machine (LocalGroup, MpirunGroup) are polled every ``poll_interval``; an event-driven
group (a remote host's agent, launcher.remote.group) notes itself in the attempt's Activity
(launcher/run/activity.py) when its agent says something, and a tick visits only those. Once a
``SWEEP_INTERVAL_S`` every group is visited, for what only time brings: a host gone silent, the
hang watchdog's verdict, the live status's periodic block. With no group to poll the supervisor
sleeps until an event, an interrupt, the next sweep or the end of a save-and-stop grace.
"""
from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from launcher.log_format import parse_loss_line, parse_saved_and_stopped
from launcher.run.activity import Activity
from launcher.run.failures import RankExit, RankFailure
from launcher.run.group import ProcessGroup

if TYPE_CHECKING:  # the per-host agent runs attempts too: what only the controller's need loads when used
    from launcher.console import LiveStatus
    from launcher.job.hang_policy import HangPolicy
    from launcher.run.watchdog import HangVerdict, Watchdog

POLL_INTERVAL_S = 0.02  # groups that watch processes here: how often they are polled
SWEEP_INTERVAL_S = 1.0  # every group, event-driven ones too: silence, hang watchdog, status block
STOP_GRACE_S = 2.5
SCHEDULER_EXIT_WAIT_S = 1.5
TAIL_LINES = 20


@dataclass(frozen=True)
class HangReport:
    """The watchdog's verdict with what every rank's processes showed; ``record`` goes into job.json."""

    verdict: HangVerdict
    stuck: tuple[int, ...]
    message: str
    record: dict


@dataclass(frozen=True)
class AttemptOutcome:
    """state: succeeded | failed | interrupted. ``signal_received``: what interrupted the launcher."""

    state: str
    exits: tuple[RankExit, ...]
    first_failure: Optional[RankFailure] = None
    helper_problem: Optional[str] = None
    signal_received: Optional[int] = None
    hang: Optional[HangReport] = None
    preempted: Optional[dict] = None  # the save-and-stop record (job.json status.preempted)
    lost_hosts: dict = field(default_factory=dict)  # host -> why: failures that were a host's (host_faults.py)


@dataclass(frozen=True)
class AttemptPolicy:
    """When an attempt ends by itself. The controller's (the default): at the first failed rank, a
    failed helper, or once every rank has exited. An SSH agent's (``observe_only``): only when told
    to stop, because the controller alone knows when the whole job is over."""

    fail_fast: bool = True
    stop_on_helper_problem: bool = True
    end_when_all_exited: bool = True

    @classmethod
    def observe_only(cls) -> "AttemptPolicy":
        return cls(fail_fast=False, stop_on_helper_problem=False, end_when_all_exited=False)


class Interrupt:
    """Set from a signal handler; it wakes the supervisor's sleep (``wakes``: its attempt's Activity) at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: Optional[int] = None
        self.count = 0  # a second signal while ranks save their checkpoints stops them at once
        self.wakes: Optional[threading.Event] = None

    def trigger(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum
        self.count += 1
        self.event.set()
        wakes = self.wakes
        if wakes is not None:
            wakes.set()


# Signals that ask for "save a checkpoint and stop" first (a scheduler's preemption, Slurm's --signal,
# a Kubernetes eviction); Ctrl-C and SIGHUP stop at once.
SAVE_FIRST_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@dataclass
class _Saving:
    """Ranks were asked to save a checkpoint and stop; the attempt waits for them until ``until``."""

    signal_name: str
    requested: str
    grace_s: float
    until: float
    steps: dict = field(default_factory=dict)  # rank -> the step it saved at (its "saved and stopped" line)

    def read(self, lines: Sequence[tuple[int, str]]) -> None:
        self.steps.update((rank, step) for rank, line in lines if (step := parse_saved_and_stopped(line)) is not None)

    def record(self, exits: dict, total: int) -> dict:
        done = [e for e in exits.values() if not e.stopped_by_launcher]
        return {"signal": self.signal_name, "requested": self.requested, "grace_s": self.grace_s,
                "saved_step": max(self.steps.values()) if self.steps else None,
                "ranks_saved": len(self.steps), "all_stopped_in_time": len(done) == total}


def _ask_to_save(groups: Sequence[ProcessGroup], interrupt: Interrupt, grace_s: float) -> Optional[_Saving]:
    """Send "save and stop" to every group that can pass it on; None when none can (then stop at once)."""
    from launcher.job.job_json import utc_now

    asked = [group.save_and_stop() for group in groups]
    if not any(asked):
        return None
    return _Saving(signal.Signals(interrupt.signal).name, utc_now(), grace_s, time.monotonic() + grace_s)


def run_attempt(
    groups: Sequence[ProcessGroup],
    *,
    status: Optional[LiveStatus] = None,
    interrupt: Optional[Interrupt] = None,
    grace: "float | Callable[[], float]" = STOP_GRACE_S,
    poll_interval: float = POLL_INTERVAL_S,
    hang: Optional[HangPolicy] = None,
    restarts_left: int = 0,
    policy: AttemptPolicy = AttemptPolicy(),
    save_grace_s: float = 0.0,
    on_straggler: Optional[Callable[[dict], None]] = None,
) -> AttemptOutcome:
    """Start ``groups`` and watch them until the attempt ends (``policy``); close every group.

    ``status`` sees every exit (``ended``), every tick's new log lines and the end; ``grace`` may
    be a callable, read when the groups are closed (an agent learns it with the stop request).
    ``save_grace_s`` > 0: SIGTERM/SIGUSR1 first ask every rank to save a checkpoint and stop, and
    wait that long for them (a second signal, or the time running out, stops them as usual).
    ``on_straggler(record)``: a rank was named slow (the controller's attempt only: an agent's
    ranks are one host's, compared by the controller with every other host's).
    """
    interrupt = interrupt or Interrupt()
    total = sum(len(g.ranks) for g in groups)
    exits: dict[int, RankExit] = {}
    first: Optional[RankExit] = None
    first_group: Optional[ProcessGroup] = None
    problem: Optional[str] = None
    hung: Optional[HangReport] = None
    watchdog: Optional[Watchdog] = None
    activity = Activity()
    order = {group: index for index, group in enumerate(groups)}
    try:
        # The one place groups are told where to say they have news; the others are polled.
        polled = [group for group in groups if not group.report_news_to(activity)]
        interrupt.wakes = activity.event
        for group in groups:
            if interrupt.signal is not None:
                break  # stopped before it began: start nothing more (close() below still runs on all)
            group.start()
        if hang is not None and hang.enabled:
            from launcher.run.watchdog import Watchdog

            watchdog = Watchdog.start(hang, [(r, g.rank_host(r)) for g in groups for r in g.ranks], time.monotonic())
        stragglers = None
        if on_straggler is not None:
            from launcher.run.stragglers import StragglerDetector

            stragglers = StragglerDetector({r: g.rank_host(r) for g in groups for r in g.ranks})
        saving: Optional[_Saving] = None
        next_sweep = 0.0  # the first tick visits every group
        while first is None and problem is None and hung is None:
            if interrupt.signal is not None:
                if saving is None and save_grace_s > 0 and interrupt.signal in SAVE_FIRST_SIGNALS \
                        and interrupt.count == 1 and len(exits) < total:
                    saving = _ask_to_save(groups, interrupt, save_grace_s)
                    if saving is None:
                        break
                elif saving is None or interrupt.count > 1 or time.monotonic() > saving.until:
                    break
            noted = activity.take()  # before any group is read: what arrives from now on wakes the next tick
            tick_at = time.monotonic()
            sweep = tick_at >= next_sweep
            if sweep:
                next_sweep = tick_at + SWEEP_INTERVAL_S
                visit: Sequence[ProcessGroup] = groups
            else:
                visit = sorted(noted.union(polled), key=order.__getitem__)
            for group in visit:
                for exit_ in group.poll():
                    exits[exit_.rank] = exit_
                    if watchdog is not None:
                        watchdog.ended(exit_.rank)
                    if status is not None:
                        status.mark(exit_.rank, "done" if exit_.ok else "FAILED")
                        status.ended(group, exit_)
                    if not exit_.ok and first is None and policy.fail_fast and saving is None:
                        first, first_group = exit_, group
                if policy.stop_on_helper_problem:
                    problem = problem or group.helper_problem()
            if len(exits) == total and first is None and (policy.end_when_all_exited or saving is not None):
                _wait_for_helpers(groups, interrupt)
                break
            lines = [item for group in visit for item in group.new_log_lines()]
            now = time.monotonic()
            if stragglers is not None and lines:
                from launcher.job.job_json import utc_now

                for rank, line in lines:
                    for record in stragglers.feed(rank, line, utc_now()):
                        if status is not None:
                            status.mark(record["rank"], "SLOW")
                        on_straggler(record)
            if saving is not None:
                saving.read(lines)
            elif watchdog is not None:
                _feed(watchdog, lines, now)
                verdict = watchdog.check(now) if first is None and sweep else None
                if verdict is not None:
                    hung = _diagnose(verdict, groups, "restarted" if restarts_left > 0 else "stopped")
                    if status is not None:
                        for rank in hung.stuck:
                            status.mark(rank, "HUNG")
            if status is not None:
                status.tick(groups, lines=lines)
            if first is None and problem is None and hung is None:  # else the attempt ends now
                wake_at = min(next_sweep, time.monotonic() + poll_interval) if polled else next_sweep
                if saving is not None:
                    wake_at = min(wake_at, saving.until)
                activity.wait(wake_at - time.monotonic())
        if saving is not None:
            # The ranks that exited said which step they saved; read what they wrote since the last tick.
            for group in groups:
                for batch in group.remaining_log_lines():
                    saving.read(batch)
    finally:
        interrupt.wakes = None
        grace_s = grace() if callable(grace) else grace
        for group in groups:
            for exit_ in group.close(grace_s):
                exits.setdefault(exit_.rank, exit_)
                if status is not None:
                    status.mark(exit_.rank, "stopped")
                    status.ended(group, exit_)
        if status is not None:
            status.finish(groups)

    ordered = tuple(exits[k] for k in sorted(exits))
    failure = None
    if first is not None and first_group is not None:
        failure = RankFailure(
            rank=first.rank,
            host=first.host,
            exit_code=first.exit_code,
            signal=first.signal,
            log_path=first_group.log_path(first.rank),
            tail=first_group.log_tail(first.rank, TAIL_LINES),
            note=_disk_note(first_group, first.rank),
        )
    if first is not None or hung is not None or problem is not None:
        from launcher.run.host_faults import lost_hosts

        ranks_by_host: dict = {}
        for group in groups:
            for rank in group.ranks:
                ranks_by_host.setdefault(group.rank_host(rank), []).append(rank)
        lost = lost_hosts(groups, ordered, failure, ranks_by_host)
        if failure is not None:
            return AttemptOutcome("failed", ordered, first_failure=failure, lost_hosts=lost)
        if hung is not None:
            return AttemptOutcome("failed", ordered, helper_problem=hung.message, hang=hung, lost_hosts=lost)
        return AttemptOutcome("failed", ordered, helper_problem=problem, lost_hosts=lost)
    if interrupt.signal is not None:
        return AttemptOutcome("interrupted", ordered, signal_received=interrupt.signal,
                              preempted=saving.record(exits, total) if saving is not None else None)
    return AttemptOutcome("succeeded", ordered)


def _disk_note(group: ProcessGroup, rank: int) -> Optional[str]:
    """A rank that died on a full disk often cannot say so itself (its log is on that disk)."""
    if not group.logs_are_local:
        return None
    from launcher.job.disk_space import full_file_system
    from launcher.job.rank_env import checkpoint_dir

    return full_file_system([group.rank_dir(rank), checkpoint_dir(group.job_dir)])


def _feed(watchdog: Watchdog, lines: Sequence[tuple[int, str]], now: float) -> None:
    for rank, line in lines:
        loss = parse_loss_line(line)
        if loss is not None:
            watchdog.step(rank, loss[0], loss[1], now)


def _diagnose(verdict: HangVerdict, groups: Sequence[ProcessGroup], action: str) -> HangReport:
    """Every rank's stack (all of them: the stuck rank and what the others wait in), then who is stuck."""
    from launcher.job.job_json import utc_now
    from launcher.run.hang import hang_message, hang_record, narrow_stuck

    detected = utc_now()  # before the dumps: they take seconds on a busy host
    title = f"launch-train hang watchdog: {verdict.message()}"
    looks: dict = {}
    for group in groups:
        looks.update(group.look_at([r for r in group.ranks if r in {w.rank for w in verdict.ranks if not w.ended}], title))
    stuck = narrow_stuck(verdict, looks)
    message = hang_message(verdict, looks, stuck)
    return HangReport(verdict, stuck, message, hang_record(verdict, looks, stuck, action, message, detected))


def _wait_for_helpers(groups: Sequence[ProcessGroup], interrupt: Interrupt) -> None:
    """All ranks finished: give the scheduler a moment to see them unregister and exit by itself."""
    deadline = time.monotonic() + SCHEDULER_EXIT_WAIT_S
    while time.monotonic() < deadline and interrupt.signal is None:
        if all(g.helpers_done() for g in groups):
            return
        interrupt.event.wait(0.05)
