"""Stragglers: naming the rank that holds a synchronous job back (pure: fed log lines, no clock of its own).

In synchronous data parallel every rank's step lasts as long as the slowest rank's, so step
times name no one. Each rank of deeplab.train says where its own time goes, every N steps
(launcher/log_format.py, "timing:" lines): the median time it waited for its next batch, and
the median time of a fixed piece of local work ("device probe": a throttled CPU or device
is slow at it whatever the others do). A slow data disk or starved data worker shows in the
first, a slow device in the second.

A rank is named when, in SUSTAINED consecutive windows, one of its two figures is above
RATIO x the median of the same figure on every other rank, and above it by more than a floor:
  * RATIO 1.5: a rank half again as slow costs the whole job a third of its speed, worth a
    look; healthy ranks on one machine measured within 1.1x of each other (noise);
  * SUSTAINED 3 windows (60 steps by default): one slow window is a checkpoint save, an
    evaluation or a garbage collection, not a slow rank;
  * the floor: a data wait must exceed the others' by 10% of the step time (and 5 ms), a
    probe by 0.5 ms, so 1 ms against 0.5 ms is no straggler.
Comparing against the OTHER ranks' median keeps a 2-rank job meaningful (the median of all
ranks of a 2-rank job is halfway to the slow one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Mapping, Optional

from launcher.log_format import parse_timing_line

RATIO = 1.5
SUSTAINED = 3
DATA_FLOOR_S = 0.005
DATA_FLOOR_OF_STEP = 0.10
PROBE_FLOOR_S = 0.0005
METRICS = ("data wait", "device probe")


@dataclass
class StragglerDetector:
    hosts: Mapping[int, str]  # rank -> host, every rank of the attempt
    named: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._windows: dict[int, dict[int, tuple[float, float, float]]] = {}  # last step -> rank -> timing
        self._streak: dict[tuple[int, str], int] = {}
        self._done: set[int] = set()

    def feed(self, rank: int, line: str, at: str) -> list[dict]:
        """One log line of ``rank``; the stragglers named because of it (each rank once)."""
        timing = parse_timing_line(line)
        if timing is None or rank not in self.hosts or len(self.hosts) < 2:
            return []
        last_step, data_s, step_s, probe_s = timing
        window = self._windows.setdefault(last_step, {})
        window[rank] = (data_s, step_s, probe_s)
        if len(window) < len(self.hosts):
            return []
        del self._windows[last_step]
        for older in [step for step in self._windows if step < last_step]:
            del self._windows[older]  # a window some rank never reported (it ended): judged no more
        return self._judge(window, at)

    def _judge(self, window: dict[int, tuple[float, float, float]], at: str) -> list[dict]:
        new = []
        step_median = median(timing[1] for timing in window.values())
        for rank, (data_s, step_s, probe_s) in window.items():
            others = [timing for other, timing in window.items() if other != rank]
            for metric, value, usual, floor in (
                ("data wait", data_s, median(t[0] for t in others), max(DATA_FLOOR_S, DATA_FLOOR_OF_STEP * step_median)),
                ("device probe", probe_s, median(t[2] for t in others), PROBE_FLOOR_S),
            ):
                slow = value > RATIO * usual and value - usual > floor
                key = (rank, metric)
                self._streak[key] = self._streak.get(key, 0) + 1 if slow else 0
                if self._streak[key] >= SUSTAINED and rank not in self._done:
                    self._done.add(rank)
                    ratio = value / usual if usual > 0 else float("inf")
                    record = {"rank": rank, "host": self.hosts[rank], "metric": metric, "step_s": round(value, 6),
                              "median_s": round(usual, 6), "ratio": round(ratio, 2) if ratio != float("inf") else None,
                              "at": at, "reason": f"{metric} {value:.4f} s, {ratio:.1f}x the other ranks' median "
                                                  f"{usual:.4f} s over {SUSTAINED} windows"}
                    self.named.append(record)
                    new.append(record)
        return new


def describe(record: dict) -> str:
    return f"rank {record['rank']} on {record['host']} is a straggler: {record['reason']}"


__all__ = ["METRICS", "RATIO", "SUSTAINED", "StragglerDetector", "describe"]
