"""Parse what a training rank printed, as a whole log: losses, epoch timings, mIoU.

Pure functions over text. The line formats themselves (``epoch: 1 step: 20, loss is
0.11594``, ``Epoch time: ...``, ``mIoU = ...``, ``eval at step N (...): mIoU = ...``:
evaluation during training, one point of the mIoU curve) are launcher.log_format's, shared with
the live status.

A log whose last line has no newline was cut off (rank killed, disk full, copy of a
live file): that last line is not trusted -- "loss is 0.11" could be the first
characters of "loss is 0.11594" -- so it is dropped and the log is marked truncated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from launcher import log_format
from launcher.log_format import parse_loss_line, parse_miou_line  # noqa: F401  (part of this module's API)


@dataclass(frozen=True)
class LossPoint:
    """One logged loss. `global_step` counts steps across epochs (see parse_training_log)."""

    epoch: int
    step: int
    global_step: int
    loss: float


@dataclass(frozen=True)
class EpochTiming:
    epoch_time_ms: float
    step_time_ms: float

    def __post_init__(self) -> None:
        if self.epoch_time_ms < 0 or self.step_time_ms < 0:
            raise ValueError(f"epoch timing must be non-negative, got {self.epoch_time_ms}, {self.step_time_ms}")


@dataclass(frozen=True)
class TrainingLog:
    losses: tuple[LossPoint, ...] = ()
    epochs: tuple[EpochTiming, ...] = ()
    miou: float | None = None
    miou_curve: tuple[tuple[int, float], ...] = ()  # (global step, mIoU) of evaluations during training
    truncated: bool = False
    dropped_line: str = ""
    line_count: int = 0

    @property
    def steps(self) -> int:
        """Steps the rank reached: the highest global step logged (0 when none)."""
        return max((p.global_step for p in self.losses), default=0)

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1].loss if self.losses else None

    @property
    def mean_step_time_ms(self) -> float | None:
        """Mean per-step time of the epochs after the first (or of the only one).

        The first epoch includes graph compilation (about 10 s for DeepLabV3 on a CPU),
        which would otherwise dominate short runs and understate images/s.
        """
        timed = self.epochs[1:] or self.epochs
        if not timed:
            return None
        return sum(e.step_time_ms for e in timed) / len(timed)

    @property
    def first_epoch_step_time_ms(self) -> float | None:
        return self.epochs[0].step_time_ms if self.epochs else None


def split_complete_lines(text: str) -> tuple[list[str], str]:
    """Return (complete lines, cut-off last line or "")."""
    if not text:
        return [], ""
    lines = text.split("\n")
    tail = lines.pop()  # "" when the text ends with a newline
    return [line.rstrip("\r") for line in lines], tail


def parse_epoch_time_line(line: str) -> EpochTiming | None:
    timing = log_format.parse_epoch_time_line(line)
    return None if timing is None else EpochTiming(*timing)


def _global_steps(points: list[tuple[int, int, float]]) -> list[LossPoint]:
    """Number steps across epochs.

    MindSpore's LossMonitor prints the step within the epoch (it restarts at 1 each
    epoch), a custom callback may print the global step. Both are handled: whenever the
    epoch number goes up and the step number does not, the previous epoch's last step is
    added as an offset.
    """
    result: list[LossPoint] = []
    offset = 0
    last_epoch, last_step = None, 0
    for epoch, step, loss in points:
        if last_epoch is not None and epoch > last_epoch and step <= last_step:
            offset += last_step
        result.append(LossPoint(epoch, step, offset + step, loss))
        last_epoch, last_step = epoch, step
    return result


def parse_training_log(text: str) -> TrainingLog:
    """Parse a rank's log.txt text. Lines that match no format are ignored."""
    lines, tail = split_complete_lines(text)
    points: list[tuple[int, int, float]] = []
    epochs: list[EpochTiming] = []
    miou = None
    curve: list[tuple[int, float]] = []
    for line in lines:
        loss = parse_loss_line(line)
        if loss is not None:
            points.append(loss)
            continue
        timing = parse_epoch_time_line(line)
        if timing is not None:
            epochs.append(timing)
            continue
        value = parse_miou_line(line)
        if value is not None and not math.isnan(value):
            miou = value
            at_step = log_format.parse_eval_step(line)
            if at_step is not None:
                curve.append((at_step, value))
    return TrainingLog(
        losses=tuple(_global_steps(points)),
        epochs=tuple(epochs),
        miou=miou,
        miou_curve=tuple(curve),
        truncated=bool(tail),
        dropped_line=tail,
        line_count=len(lines) + (1 if tail else 0),
    )


def log_tail(text: str, lines: int = 20) -> str:
    """The last `lines` lines of a log, for failure reports."""
    kept = text.rstrip("\n").split("\n")[-lines:]
    return "\n".join(kept)
