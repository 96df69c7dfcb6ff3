"""Per-rank batch, global batch and the learning rate they imply, for a given rank count.

Pure (no MindSpore). The rule, so that one preset gives the same curve on 1, 2 or 8 ranks:

- ``global_batch_size > 0``: every optimizer step sees that many images over all ranks;
  each rank takes ``global_batch_size / ranks`` (it must divide evenly).
- otherwise ``batch_size`` is the per-rank batch; the global batch is ``batch_size x ranks``.
- the learning rate is stated for ``lr_reference_batch`` images per step (0: the config's
  own batch, i.e. ``global_batch_size`` or ``batch_size``) and follows the linear scaling rule
  (Goyal et al. 2017): ``lr x global batch / reference batch`` (``end_lr`` alike).

A preset that states a global batch therefore trains the same on any rank count at the
same learning rate; one that states a per-rank batch gets a proportionally larger rate on
more ranks (warm-up, ``warmup_steps``/``warmup_epochs``, is then advisable).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deeplab.config.errors import ConfigError


@dataclass(frozen=True)
class BatchPlan:
    per_rank_batch: int
    global_batch: int
    rank_size: int
    reference_batch: int
    base_lr: float  # the config's learning_rate, stated for reference_batch
    base_end_lr: float

    def __post_init__(self) -> None:
        if min(self.per_rank_batch, self.rank_size, self.reference_batch) < 1:
            raise ValueError(f"batch sizes and rank count must be >= 1, got {self}")
        if self.per_rank_batch * self.rank_size != self.global_batch:
            raise ValueError(f"global batch {self.global_batch} != {self.per_rank_batch} x {self.rank_size} ranks")

    @property
    def lr_scale(self) -> float:
        return self.global_batch / self.reference_batch

    @property
    def learning_rate(self) -> float:
        return self.base_lr * self.lr_scale

    @property
    def end_lr(self) -> float:
        return self.base_end_lr * self.lr_scale

    def describe(self) -> str:
        """The start-up line's batch and learning-rate part."""
        scaled = (f"learning rate {self.learning_rate:g} (= {self.base_lr:g} x {self.global_batch}/"
                  f"{self.reference_batch}, linear scaling)" if self.lr_scale != 1
                  else f"learning rate {self.learning_rate:g} (stated for batch {self.reference_batch})")
        return f"batch {self.per_rank_batch} per rank x {self.rank_size} rank(s) = global batch {self.global_batch}, {scaled}"


def plan_batch(cfg: Any, rank_size: int) -> BatchPlan:
    """The batch plan of ``cfg`` on ``rank_size`` ranks; ConfigError when the global batch does not divide."""
    if rank_size < 1:
        raise ValueError(f"rank_size must be >= 1, got {rank_size}")
    global_batch = int(cfg.global_batch_size)
    if global_batch > 0:
        if global_batch % rank_size:
            raise ConfigError(
                f"global_batch_size {global_batch} is not divisible by the {rank_size} ranks of this job: "
                f"choose a multiple of {rank_size}, or set batch_size (per rank) instead",
                field="global_batch_size")
        per_rank = global_batch // rank_size
    else:
        per_rank = int(cfg.batch_size)
        global_batch = per_rank * rank_size
    reference = int(cfg.lr_reference_batch) or (int(cfg.global_batch_size) or int(cfg.batch_size))
    return BatchPlan(per_rank_batch=per_rank, global_batch=global_batch, rank_size=rank_size,
                     reference_batch=reference, base_lr=float(cfg.learning_rate), base_end_lr=float(cfg.end_lr))
