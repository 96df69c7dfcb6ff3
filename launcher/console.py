"""The console while a job runs: tee'd rank output and one status line per rank (step, loss, s/step).

Progress comes from the ranks' log lines as launcher.log_format parses them.

On a TTY the status block is redrawn in place (tee'd lines scroll above it) when what it
shows changed; otherwise a plain block is printed every ``plain_interval`` seconds, so CI logs
stay readable. A tick with no new line costs next to nothing: the supervisor calls it on every
event and every sweep, whatever the rank count.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, replace
from typing import Optional, Sequence, TextIO

from launcher.job.plan import Plan
from launcher.log_format import parse_epoch_time_line, parse_loss_line, parse_timing_line
from launcher.run.group import ProcessGroup

_CLEAR_LINE = "\x1b[2K"
# MindSpore's own C++ log records ("[WARNING] DISTRIBUTED(123,7f..,python):..."): dozens per
# start-up, so the console copy (--tee) leaves them out, and the ranks' timing lines; log.txt keeps
# everything, errors are shown.
_MINDSPORE_CHATTER = re.compile(r"^\[(DEBUG|INFO|WARNING)\] [A-Z_]+\(\d+,")
_UP = "\x1b[{}A"


@dataclass(frozen=True)
class RankProgress:
    """What the live status shows for one rank. ``seconds_per_step`` from the program's own
    ``per step time`` line when it prints one, else from the time between step lines."""

    epoch: Optional[int] = None
    step: Optional[int] = None
    loss: Optional[float] = None
    seconds_per_step: Optional[float] = None
    last_step_at: Optional[float] = None
    lines: int = 0


def update_progress(progress: RankProgress, line: str, now: float) -> RankProgress:
    progress = replace(progress, lines=progress.lines + 1)
    logged = parse_loss_line(line)
    if logged is not None:
        epoch, step, loss = logged
        rate = progress.seconds_per_step
        if progress.last_step_at is not None and progress.step is not None and step > progress.step:
            rate = (now - progress.last_step_at) / (step - progress.step)
        return replace(progress, epoch=epoch, step=step, loss=loss, seconds_per_step=rate, last_step_at=now)
    timing = parse_epoch_time_line(line)
    if timing is not None:
        return replace(progress, seconds_per_step=timing[1] / 1000.0)
    return progress


def format_progress(rank: int, host: str, progress: RankProgress, state: str) -> str:
    parts = [f"rank {rank:>3} [{host}] {state:<9}"]
    if progress.step is not None:
        parts.append(f"epoch {progress.epoch} step {progress.step:>6}")
        parts.append(f"loss {progress.loss:.5f}" if progress.loss is not None else "loss -")
        parts.append(f"{progress.seconds_per_step:.3f} s/step" if progress.seconds_per_step else "- s/step")
    else:
        parts.append(f"{progress.lines} log lines, no step yet")
    return "  ".join(parts)


class LiveStatus:
    def __init__(
        self,
        plan: Plan,
        *,
        tee: Sequence[int],
        out: Optional[TextIO] = None,
        status_out: Optional[TextIO] = None,
        is_tty: Optional[bool] = None,
        plain_interval: float = 30.0,
        redraw_interval: float = 0.5,
    ) -> None:
        self.plan = plan
        self.tee = frozenset(tee)
        self.out = out if out is not None else sys.stdout
        self.status_out = status_out if status_out is not None else sys.stderr
        if is_tty is None:
            is_tty = bool(getattr(self.status_out, "isatty", lambda: False)())
        self.is_tty = is_tty
        self.plain_interval = plain_interval
        self.redraw_interval = redraw_interval
        self.progress = {r.rank: RankProgress() for r in plan.ranks}
        self.host_of = {r.rank: r.host for r in plan.ranks}
        self.states = {r.rank: "running" for r in plan.ranks}
        self._drawn_lines = 0
        self._last_draw = time.monotonic()
        self._changed = True  # since the last draw: a TTY block that would look the same is not redrawn

    def ended(self, group: ProcessGroup, rank_exit) -> None:
        """Every exit, as the supervisor saw it (mark() has already said it here)."""

    def mark(self, rank: int, state: str) -> None:
        if self.states.get(rank) != state:
            self.states[rank] = state
            self._changed = True

    def tick(self, groups: Sequence[ProcessGroup], force: bool = False,
             lines: Optional[Sequence[tuple[int, str]]] = None) -> None:
        """Take in new log lines (read here from the groups unless the caller read them) and redraw when due."""
        now = time.monotonic()
        if lines is None:
            lines = [item for group in groups for item in group.new_log_lines()]
        teed: list[str] = []
        if lines:
            self._changed = True
        for rank, line in lines:
            self.progress[rank] = update_progress(self.progress[rank], line, now)
            # The ranks' "timing:" lines are for the straggler detector (launcher/run/stragglers.py), not
            # for the person: log.txt keeps them.
            if rank in self.tee and not _MINDSPORE_CHATTER.match(line) and parse_timing_line(line) is None:
                teed.append(f"[{self.host_of[rank]}:{rank}] {line}")
        if teed:
            self._erase()
            self.out.write("\n".join(teed) + "\n")
            self.out.flush()
        due = self.redraw_interval if self.is_tty else self.plain_interval
        if self.is_tty and (teed or force or (self._changed and now - self._last_draw >= due)):
            self._draw(now)
        elif not self.is_tty and (force or now - self._last_draw >= due):
            self._draw(now)

    def _lines(self) -> list[str]:
        return [
            format_progress(rank, self.host_of[rank], self.progress[rank], self.states[rank])
            for rank in sorted(self.progress)
        ]

    def _erase(self) -> None:
        if self.is_tty and self._drawn_lines:
            self.status_out.write(_UP.format(self._drawn_lines) + "\r")
            self.status_out.write((_CLEAR_LINE + "\n") * self._drawn_lines)
            self.status_out.write(_UP.format(self._drawn_lines) + "\r")
            self.status_out.flush()
            self._drawn_lines = 0

    def _draw(self, now: float) -> None:
        lines = self._lines()
        if self.is_tty:
            self._erase()
            self.status_out.write("".join(f"{_CLEAR_LINE}{line}\n" for line in lines))
            self._drawn_lines = len(lines)
        else:
            self.status_out.write("".join(f"launch-train: {line}\n" for line in lines))
        self.status_out.flush()
        self._last_draw = now
        self._changed = False

    def finish(self, groups: Sequence[ProcessGroup]) -> None:
        """Every last line of every log (read to the end, in bounded batches) and a final status block."""
        for group in groups:
            for batch in group.remaining_log_lines():
                self.tick(groups, lines=batch)
        self.tick(groups, force=True, lines=())
        self._drawn_lines = 0
