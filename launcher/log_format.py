"""Training progress from log lines (pure): ``epoch: E step: S, loss is L`` and per-step time."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Optional

STEP_LINE = re.compile(r"epoch:\s*(\d+)\s+step:\s*(\d+),\s*loss is\s*([-+0-9.eE]+|nan|inf|-inf)", re.IGNORECASE)
STEP_TIME_LINE = re.compile(r"per step time:\s*([0-9.]+)")


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
    match = STEP_LINE.search(line)
    if match:
        epoch, step, loss = int(match.group(1)), int(match.group(2)), float(match.group(3))
        rate = progress.seconds_per_step
        if progress.last_step_at is not None and progress.step is not None and step > progress.step:
            rate = (now - progress.last_step_at) / (step - progress.step)
        return replace(progress, epoch=epoch, step=step, loss=loss, seconds_per_step=rate, last_step_at=now)
    match = STEP_TIME_LINE.search(line)
    if match:
        return replace(progress, seconds_per_step=float(match.group(1)) / 1000.0)
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
