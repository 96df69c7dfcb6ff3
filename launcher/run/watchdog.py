"""The hang watchdog's judgement (pure): which ranks stopped making progress, and who is behind.

A rank makes progress when its log shows a new training step (``epoch: E step: S, loss
is L``). The watchdog is told each step as it is seen, with the time, and asked now and
then whether the job is hung:

  * before a rank's first step (graph compile, data start-up) it has
    ``first_step_timeout_s`` from the start of the attempt;
  * after that, ``hang_timeout_s`` from its last step.

A rank that is past its timeout is hung; one hung rank makes the job hung (a collective
waits for everyone, so the others follow soon). The ranks named as stuck are the hung
ones furthest behind (fewest steps): in data-parallel training the rank that stopped
first is at most one step behind the ones waiting for it in the all-reduce. Ties are
for the caller to break with what the processes say (a stopped process, its stack).
Ranks that have ended are not watched.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Optional

from launcher.job.hang_policy import HangPolicy

__all__ = ["HangPolicy", "HangVerdict", "RankWatch", "Watchdog"]

@dataclass(frozen=True)
class RankWatch:
    rank: int
    host: str
    steps: int = 0  # step lines seen in this attempt
    epoch: Optional[int] = None
    step: Optional[int] = None  # the last "step: S" (within its epoch)
    last_progress: float = 0.0  # monotonic time of the last step, or of the attempt's start
    ended: bool = False

    def where(self) -> str:
        return f"epoch {self.epoch} step {self.step}" if self.step is not None else "no step yet"


@dataclass(frozen=True)
class HangVerdict:
    kind: str  # "no first step" | "no new step"
    timeout_s: float
    hung: tuple[int, ...]  # past their timeout
    stuck: tuple[int, ...]  # the hung ranks furthest behind
    ranks: tuple[RankWatch, ...]  # every watched rank, as it was
    now: float

    def quiet_for(self, rank: int) -> float:
        watch = next(w for w in self.ranks if w.rank == rank)
        return self.now - watch.last_progress

    def message(self) -> str:
        """One line: which ranks, for how long, where they were."""
        parts = []
        for rank in self.stuck:
            watch = next(w for w in self.ranks if w.rank == rank)
            parts.append(f"rank {rank} on {watch.host} ({watch.where()}, quiet for {self.quiet_for(rank):.0f} s)")
        others = [r for r in self.hung if r not in self.stuck]
        tail = f"; also quiet: rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))}" if others else ""
        what = "made no first step" if self.kind == "no first step" else "made no new step"
        return f"hung: {', '.join(parts)} {what} within {self.timeout_s:g} s{tail}"


@dataclass
class Watchdog:
    """Mutable tracker over pure rules: feed step() and ended(), ask check()."""

    policy: HangPolicy
    ranks: dict[int, RankWatch] = field(default_factory=dict)

    @classmethod
    def start(cls, policy: HangPolicy, ranks: Iterable[tuple[int, str]], now: float) -> "Watchdog":
        return cls(policy, {rank: RankWatch(rank, host, last_progress=now) for rank, host in ranks})

    def step(self, rank: int, epoch: Optional[int], step: Optional[int], now: float) -> None:
        watch = self.ranks.get(rank)
        if watch is not None:
            self.ranks[rank] = replace(watch, steps=watch.steps + 1, epoch=epoch, step=step, last_progress=now)

    def ended(self, rank: int) -> None:
        watch = self.ranks.get(rank)
        if watch is not None:
            self.ranks[rank] = replace(watch, ended=True)

    def check(self, now: float) -> Optional[HangVerdict]:
        hung: list[RankWatch] = []
        kinds = set()
        for watch in self.ranks.values():
            if watch.ended:
                continue
            limit = self.policy.first_step_timeout_s if watch.steps == 0 else self.policy.hang_timeout_s
            if limit is not None and now - watch.last_progress > limit:
                hung.append(watch)
                kinds.add("no first step" if watch.steps == 0 else "no new step")
        if not hung:
            return None
        fewest = min(w.steps for w in hung)
        # Furthest behind among every running rank, not only those already past the limit: a
        # frozen rank and its peer blocked in the next all-reduce logged the same step, and the
        # peer may have logged it a few milliseconds earlier (so it crosses the limit first).
        behind = min(w.steps for w in self.ranks.values() if not w.ended)
        stuck = tuple(sorted(w.rank for w in self.ranks.values() if not w.ended and w.steps == behind))
        kind = "no first step" if fewest == 0 else "no new step"
        timeout = self.policy.first_step_timeout_s if fewest == 0 else self.policy.hang_timeout_s
        return HangVerdict(kind, float(timeout or 0.0), tuple(sorted(w.rank for w in hung)), stuck,
                           tuple(self.ranks[r] for r in sorted(self.ranks)), now)
