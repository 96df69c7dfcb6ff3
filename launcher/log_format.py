"""The training log-line format: the one place that knows what a rank's progress lines look like.

The training program's contract (deeplab.train's docstring; the README's "Log lines"):
one line per logged step, one per epoch, one per evaluation:

    epoch: 1 step: 20, loss is 0.11594
    Epoch time: 78748.379, per step time: 107.378
    mIoU = 0.65049
    eval at step 370 (epoch 10, 'val', 60 images, scale 1.5, 2.1 s): mIoU = 0.81234
        (an evaluation during training: one point of the mIoU curve)
    deeplab-train: saved and stopped at step 412 as asked (SIGUSR1): .../deeplab-step000412.ckpt
        (the answer to launch-train's "save and stop" before a preemption)
    timing: steps 21-40, data wait 0.0012 s, step 0.1801 s, device probe 0.0031 s
        (medians of a window of steps: what names a straggler, launcher/run/stragglers.py)

The live status (launcher.console), the agent's progress events
(launcher.remote.protocol) and collect-results (launcher.collect.logparse) all parse
lines with these functions. Pure.
"""
from __future__ import annotations

import re
from typing import Optional

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf)"
LOSS_LINE = re.compile(r"epoch:\s*(\d+)\s+step:\s*(\d+),\s*loss is\s*" + _NUMBER + r"\s*$", re.IGNORECASE)
EPOCH_TIME_LINE = re.compile(r"Epoch time:\s*" + _NUMBER + r",\s*per step time:\s*" + _NUMBER + r"\s*$")
MIOU_LINE = re.compile(r"mIoU\s*=\s*" + _NUMBER + r"\s*$")
EVAL_AT_STEP = re.compile(r"^eval at step (\d+)\b")
TIMING_LINE = re.compile(r"^timing: steps (\d{1,12})-(\d{1,12}), data wait " + _NUMBER + r" s, step " + _NUMBER
                         + r" s, device probe " + _NUMBER + r" s\s*$")
SAVED_AND_STOPPED = re.compile(r"\bsaved and stopped at step (\d{1,12})\b")


def parse_loss_line(line: str) -> Optional[tuple[int, int, float]]:
    """``epoch: E step: S, loss is L`` -> (E, S, L); the step counts within the epoch."""
    match = LOSS_LINE.search(line)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), float(match.group(3))


def parse_epoch_time_line(line: str) -> Optional[tuple[float, float]]:
    """``Epoch time: T, per step time: S`` -> (T, S), both in milliseconds."""
    match = EPOCH_TIME_LINE.search(line)
    if match is None:
        return None
    return float(match.group(1)), float(match.group(2))


def parse_miou_line(line: str) -> Optional[float]:
    """``mIoU = M`` -> M."""
    match = MIOU_LINE.search(line)
    return None if match is None else float(match.group(1))


def parse_eval_step(line: str) -> Optional[int]:
    """``eval at step N (...): mIoU = M`` -> N, the global step of an evaluation during training."""
    match = EVAL_AT_STEP.match(line)
    return None if match is None else int(match.group(1))


def parse_saved_and_stopped(line: str) -> Optional[int]:
    """``... saved and stopped at step N ...`` -> N, the step a rank saved before it stopped as asked."""
    match = SAVED_AND_STOPPED.search(line)
    return None if match is None else int(match.group(1))


def parse_timing_line(line: str) -> Optional[tuple[int, float, float, float]]:
    """``timing: steps A-B, data wait D s, step S s, device probe P s`` -> (B, D, S, P)."""
    match = TIMING_LINE.search(line)
    if match is None:
        return None
    values = tuple(float(match.group(i)) for i in (3, 4, 5))
    if not all(0 <= value < 1e6 for value in values):  # nan, inf, negative: not a timing
        return None
    return (int(match.group(2)), *values)
