"""The supervisor wakes on events (launcher/run/activity.py): event-driven groups are visited when they have
news and at the periodic sweep, polled groups every tick; an exit or an interrupt wakes it at once.

The groups here are fakes whose news comes from another thread, as a remote host's does; the sweep is
pushed an hour away, so an attempt that ends at all was woken by what it was told, not by the clock.
"""
from __future__ import annotations

import signal
import threading

import pytest

from launcher.run import supervisor
from launcher.run.activity import Activity
from launcher.run.failures import RankExit
from launcher.run.supervisor import AttemptPolicy, Interrupt, run_attempt


class NewsGroup:
    """An event-driven group (as launcher.remote.group.RemoteHostGroup): counts the supervisor's visits."""

    logs_are_local = False

    def __init__(self, host: str, ranks: tuple[int, ...], event_driven: bool = True) -> None:
        self.host, self.ranks, self.event_driven = host, ranks, event_driven
        self.visits = 0
        self.activity: "Activity | None" = None
        self._lock = threading.Lock()
        self._exits: list[RankExit] = []
        self._reported: set[int] = set()

    def report_news_to(self, activity: Activity) -> bool:
        self.activity = activity
        return self.event_driven

    def exits(self, rank: int, code: int) -> None:
        """The rank ended (another thread, as the channel hub's reader)."""
        with self._lock:
            self._exits.append(RankExit(rank, self.host, code))
        if self.activity is not None:
            self.activity.note(self)

    def start(self) -> None:
        pass

    def rank_host(self, rank: int) -> str:
        return self.host

    def poll(self) -> tuple[RankExit, ...]:
        self.visits += 1
        with self._lock:
            out, self._exits = self._exits, []
        self._reported.update(exit_.rank for exit_ in out)
        return tuple(out)

    def helper_problem(self) -> None:
        return None

    def helpers_done(self) -> bool:
        return True

    def new_log_lines(self) -> list:
        return []

    def close(self, grace: float) -> tuple[RankExit, ...]:
        stopped = [RankExit(rank, self.host, None, signal.SIGTERM.value, stopped_by_launcher=True)
                   for rank in self.ranks if rank not in self._reported]
        self._reported.update(self.ranks)
        return tuple(stopped)

    def log_path(self, rank: int) -> str:
        return f"{self.host}:LOG{rank}/log.txt"

    def log_tail(self, rank: int, lines: int = 20) -> str:
        return ""

    def lost_hosts(self) -> dict:
        return {}


def _run_in_thread(groups, **options):
    """run_attempt in a thread of its own: an attempt that is never woken fails the test instead of hanging it."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(outcome=run_attempt(groups, **options)), daemon=True)
    thread.start()
    return thread, result


def _until(predicate, timeout: float = 30.0) -> None:
    waited = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        waited.wait(0.01)
    raise AssertionError("timed out")


@pytest.fixture
def no_sweep(monkeypatch):
    monkeypatch.setattr(supervisor, "SWEEP_INTERVAL_S", 3600.0)


def test_an_exit_wakes_the_supervisor_and_only_its_group_is_visited(no_sweep):
    groups = [NewsGroup(f"h{index}", (index,)) for index in range(50)]
    thread, result = _run_in_thread(groups)
    _until(lambda: all(group.visits for group in groups))  # the first tick: a sweep of all 50
    threading.Event().wait(0.2)  # nothing has news meanwhile: the supervisor sleeps
    visits_before = [group.visits for group in groups]
    groups[37].exits(37, 3)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the exit did not wake the supervisor"
    outcome = result["outcome"]
    assert outcome.state == "failed" and outcome.first_failure.rank == 37 and outcome.first_failure.exit_code == 3
    assert visits_before == [1] * 50  # asleep all that time: no poll of every group every 20 ms
    assert [group.visits - before for group, before in zip(groups, visits_before)] == [0] * 37 + [1] + [0] * 12


def test_ctrl_c_wakes_a_supervisor_asleep_until_its_next_sweep(no_sweep):
    groups = [NewsGroup(f"h{index}", (index,)) for index in range(3)]
    interrupt = Interrupt()
    thread, result = _run_in_thread(groups, interrupt=interrupt)
    _until(lambda: all(group.visits for group in groups))  # asleep after its first sweep
    interrupt.trigger(signal.SIGINT)
    thread.join(timeout=30)
    assert not thread.is_alive(), "Ctrl-C did not wake the supervisor"
    assert result["outcome"].state == "interrupted" and result["outcome"].signal_received == signal.SIGINT
    assert interrupt.wakes is None  # the attempt's wake-up is not left behind for the next one


def test_polled_groups_are_polled_every_tick_and_event_driven_ones_are_not(no_sweep):
    polled = NewsGroup("here", (0,), event_driven=False)  # as a LocalGroup: it watches processes itself
    remote = NewsGroup("there", (1,))
    interrupt = Interrupt()
    thread, result = _run_in_thread([polled, remote], interrupt=interrupt, poll_interval=0.01)
    threading.Event().wait(0.5)
    interrupt.trigger(signal.SIGINT)
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert polled.visits > 10 and remote.visits == 1  # the remote group: the first sweep only


def test_an_observe_only_attempt_polls_its_one_local_group_until_told_to_stop():
    """The per-host agent's attempt (launcher.remote.agent): a LocalGroup, observe_only: exits do not end it."""
    group = NewsGroup("here", (0, 1), event_driven=False)
    interrupt = Interrupt()
    thread, result = _run_in_thread([group], interrupt=interrupt, poll_interval=0.01,
                                    policy=AttemptPolicy.observe_only())
    group.exits(0, 1)
    threading.Event().wait(0.3)
    assert thread.is_alive()  # a failed rank is reported, not acted on: the controller decides
    interrupt.trigger(0)
    thread.join(timeout=30)
    assert not thread.is_alive() and result["outcome"].state == "interrupted"
    assert [(e.rank, e.exit_code, e.stopped_by_launcher) for e in result["outcome"].exits] == [(0, 1, False),
                                                                                               (1, None, True)]


def test_activity_loses_no_wake_up_between_take_and_wait():
    activity = Activity()
    activity.note("a")
    assert activity.take() == {"a"} and not activity.event.is_set()
    activity.note("b")  # after the take: the next wait returns at once
    assert activity.event.is_set()
    activity.note("c")  # the event was already set: noted all the same
    assert activity.take() == {"b", "c"} and activity.take() == set()
