"""Parse what a training rank printed: loss, epoch timing and mIoU lines.

Pure functions over text. The line formats are the training program's contract
(CONTRACTS.md):

    epoch: 1 step: 20, loss is 0.11594
    Epoch time: 78748.379, per step time: 107.378
    mIoU = 0.65049
    eval at step 370 (epoch 10, 'val', 60 images, scale 1.5, 2.1 s): mIoU = 0.81234
        (evaluation during training: one point of the mIoU curve)

A log whose last line has no newline was cut off (rank killed, disk full, copy of a
live file): that last line is not trusted -- "loss is 0.11" could be the first
characters of "loss is 0.11594" -- so it is dropped and the log is marked truncated.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf)"
LOSS_LINE = re.compile(r"epoch:\s*(\d+)\s+step:\s*(\d+),\s*loss is\s*" + _NUMBER + r"\s*$", re.IGNORECASE)
EPOCH_TIME_LINE = re.compile(r"Epoch time:\s*" + _NUMBER + r",\s*per step time:\s*" + _NUMBER + r"\s*$")
MIOU_LINE = re.compile(r"mIoU\s*=\s*" + _NUMBER + r"\s*$")
EVAL_AT_STEP = re.compile(r"^eval at step (\d+)\b")


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


def _number(text: str) -> float:
    return float(text)


def split_complete_lines(text: str) -> tuple[list[str], str]:
    """Return (complete lines, cut-off last line or "")."""
    if not text:
        return [], ""
    lines = text.split("\n")
    tail = lines.pop()  # "" when the text ends with a newline
    return [line.rstrip("\r") for line in lines], tail


def parse_loss_line(line: str) -> tuple[int, int, float] | None:
    match = LOSS_LINE.search(line)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), _number(match.group(3))


def parse_epoch_time_line(line: str) -> EpochTiming | None:
    match = EPOCH_TIME_LINE.search(line)
    if match is None:
        return None
    return EpochTiming(_number(match.group(1)), _number(match.group(2)))


def parse_miou_line(line: str) -> float | None:
    match = MIOU_LINE.search(line)
    return None if match is None else _number(match.group(1))


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
            at_step = EVAL_AT_STEP.match(line)
            if at_step:
                curve.append((int(at_step.group(1)), value))
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
