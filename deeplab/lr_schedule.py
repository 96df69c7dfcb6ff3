"""Per-step learning rates: poly, cosine and exponential decay with optional linear warmup.

Pure numpy. The decay formulas are the reference implementation's (model zoo
DeepLabV3 ``learning_rates.py``) with the decay spanning the steps after warmup:

- poly: ``(base - end) * (1 - i / n) ** power + end``
- cos:  ``base * 0.5 * (1 + cos(pi * i / n))``
- exp:  ``base * rate ** (i // decay_step)`` (staircase)

where ``i`` counts steps after warmup and ``n = total_steps - warmup_steps``. Warmup
rises linearly to ``base`` over ``warmup_steps`` steps: ``base * (i + 1) / warmup_steps``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LR_TYPES = ("poly", "cos", "exp")


@dataclass(frozen=True)
class LrSchedule:
    lr_type: str
    base_lr: float
    total_steps: int
    warmup_steps: int = 0
    end_lr: float = 0.0
    power: float = 0.9
    decay_rate: float = 0.1
    decay_step: int = 40000

    def __post_init__(self) -> None:
        if self.lr_type not in LR_TYPES:
            raise ValueError(f"lr_type must be one of {LR_TYPES}, got {self.lr_type!r}")
        if self.base_lr <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.base_lr}")
        if self.total_steps < 1:
            raise ValueError(f"the number of training steps must be >= 1, got {self.total_steps}")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total steps {self.total_steps}), got {self.warmup_steps}"
            )
        if self.end_lr < 0 or self.end_lr > self.base_lr:
            raise ValueError(f"end_lr must be in [0, learning_rate], got {self.end_lr}")
        if self.decay_step < 1:
            raise ValueError(f"lr_decay_step must be >= 1, got {self.decay_step}")

    def rates(self) -> np.ndarray:
        """float32 array, one learning rate per global step (index = step - 1)."""
        warm = np.arange(self.warmup_steps, dtype=np.float64)
        warmup = self.base_lr * (warm + 1) / max(self.warmup_steps, 1)
        n = self.total_steps - self.warmup_steps
        i = np.arange(n, dtype=np.float64)
        if self.lr_type == "poly":
            decay = (self.base_lr - self.end_lr) * (1.0 - i / n) ** self.power + self.end_lr
        elif self.lr_type == "cos":
            decay = self.base_lr * 0.5 * (1.0 + np.cos(np.pi * i / n))
        else:
            decay = self.base_lr * self.decay_rate ** (i // self.decay_step)
        return np.concatenate([warmup, decay]).astype(np.float32)


def warmup_steps_of(cfg, steps_per_epoch: int) -> int:
    """warmup_steps, else warmup_epochs x steps per epoch (rounded, at least 1 when asked for)."""
    steps = int(getattr(cfg, "warmup_steps", 0) or 0)
    epochs = float(getattr(cfg, "warmup_epochs", 0) or 0)
    if steps == 0 and epochs > 0:
        steps = max(1, round(epochs * steps_per_epoch))
    return steps


def schedule_from_config(cfg, total_steps: int, steps_per_epoch: int = 1, lr_scale: float = 1.0) -> LrSchedule:
    """The schedule a training config asks for over ``total_steps`` steps.

    lr_scale multiplies learning_rate and end_lr (the linear scaling rule, deeplab/batch_plan.py).
    A warm-up longer than the run (a short --train-steps) is cut to leave one decay step.
    """
    return LrSchedule(
        lr_type=cfg.lr_type,
        base_lr=float(cfg.learning_rate) * lr_scale,
        total_steps=total_steps,
        warmup_steps=min(warmup_steps_of(cfg, steps_per_epoch), total_steps - 1),
        end_lr=float(cfg.end_lr) * lr_scale,
        power=float(cfg.lr_power),
        decay_rate=float(cfg.lr_decay_rate),
        decay_step=int(cfg.lr_decay_step),
    )
