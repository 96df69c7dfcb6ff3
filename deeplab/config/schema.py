"""The typed DeepLabV3 configuration: every field, its default, and what values are valid.

Names and defaults follow the reference DeepLab implementation (the TensorFlow
research code and the MindSpore model zoo), so a recipe can be copied from either.

Batch and learning rate across rank counts (deeplab/batch_plan.py resolves them):
``global_batch_size`` (when > 0) is the batch of one optimizer step over all ranks and each
rank takes ``global_batch_size / ranks`` (it must divide); otherwise ``batch_size`` is the
per-rank batch and the global batch grows with the ranks. The learning rate is stated for
``lr_reference_batch`` images per step (0: the config's own batch, ``global_batch_size`` or
``batch_size``) and scaled linearly to the global batch in use, so a preset keeps its rate at
the batch it states and follows the linear scaling rule elsewhere. When a YAML layer or a
``--set`` gives ``batch_size`` but not ``global_batch_size``, it clears an inherited
``global_batch_size`` (the later statement wins; see loader.py).
"""
from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from deeplab.atomic_write import write_bytes_atomically
from deeplab.config.coerce import coerce
from deeplab.config.errors import ConfigError

LrType = Literal["poly", "cos", "exp"]
Backbone = Literal["resnet101", "resnet50", "tiny"]
AmpLevel = Literal["O0", "O1", "O2", "O3"]

# ASPP rates at output stride 16 when atrous_rates is null; they scale with 16 / output_stride.
DEFAULT_ATROUS_RATES_OS16 = (6, 12, 18)


@dataclass(frozen=True)
class Config:
    """One training/evaluation/export configuration. Immutable; use :meth:`replace`."""

    # learning rate schedule and optimizer
    learning_rate: float = 0.0014
    lr_type: LrType = "poly"
    lr_power: float = 0.9
    end_lr: float = 0.0
    lr_decay_rate: float = 0.1
    lr_decay_step: int = 40000
    warmup_steps: int = 0
    warmup_epochs: float = 0.0  # used when warmup_steps is 0: epochs x steps per epoch
    lr_reference_batch: int = 0  # the global batch learning_rate is stated for; 0: this config's batch
    weight_decay: float = 5e-5
    momentum: float = 0.97
    # data and augmentation
    crop_size: int = 513
    min_scale: float = 0.5
    max_scale: float = 2.0
    image_mean: tuple[float, ...] = (103.53, 116.28, 123.675)  # BGR, as OpenCV reads images
    image_std: tuple[float, ...] = (57.375, 57.120, 58.395)
    ignore_label: int = 255
    seg_num_classes: int = 21
    eval_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
    flip: bool = False
    # model
    output_stride: int = 16
    fine_tune_batch_norm: bool = False
    atrous_rates: Optional[tuple[int, ...]] = None
    multi_grid: tuple[int, ...] = (1, 2, 4)
    decoder_output_stride: Optional[int] = None
    image_pyramid: Optional[tuple[float, ...]] = None
    backbone: Backbone = "resnet101"
    aspp_channels: int = 256
    dropout: float = 0.1
    # training loop
    epoch_size: int = 6
    batch_size: int = 2  # per rank, unless global_batch_size is set
    global_batch_size: int = 0  # > 0: the batch of one step over all ranks (split evenly)
    eval_batch_size: int = 1
    amp_level: AmpLevel = "O0"
    loss_scale: float = 3072.0
    enable_save_ckpt: bool = True
    save_checkpoint_steps: int = 1000
    save_checkpoint_num: int = 1
    save_checkpoint_seconds: float = 0.0  # > 0: also a checkpoint whenever this long has passed since the last
    save_ckpt_all_ranks: bool = False
    ckpt_pre_trained: str = ""
    num_parallel_workers: int = 0  # data workers per rank; 0: one per thread of the rank (see train.py)
    log_every_steps: int = 1  # read the loss back (a host sync) and print it every N steps
    timing_every_steps: int = 20  # a "timing:" line every N steps (data wait, step, device probe); 0: none
    eval_every_epochs: int = 0  # > 0: rank 0 evaluates every N epochs and at the end; keeps deeplab-best.ckpt
    train_eval_scale: float = 1.0  # the single scale of evaluation during training (no flip)
    fuse_allreduce: bool = True  # CPU data parallel: one all-reduce of all gradients per step (grad_fusion.py)
    compile_cache: bool = True  # reuse the compiled graph on resume/restart (MindSpore compile cache)
    seed: int = 1
    threads: int = 0  # 0: the host's cores split over the ranks running on it
    # data set location
    train_split: str = "train"
    val_split: str = "val"
    data_root: str = ""

    def __post_init__(self) -> None:
        for name, field_type in field_types().items():
            try:
                value = coerce(getattr(self, name), field_type)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}", field=name) from None
            if isinstance(value, list):
                value = tuple(value)
            object.__setattr__(self, name, value)
        for name, problem in _range_problems(self):
            raise ConfigError(f"{name}: {problem}, got {getattr(self, name)!r}", field=name)

    @property
    def effective_atrous_rates(self) -> tuple[int, ...]:
        """ASPP rates in use: atrous_rates, or (6, 12, 18) scaled by 16 / output_stride."""
        if self.atrous_rates is not None:
            return tuple(self.atrous_rates)
        return tuple(rate * 16 // self.output_stride for rate in DEFAULT_ATROUS_RATES_OS16)

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied and validated; unknown names raise ConfigError."""
        unknown = sorted(set(changes) - set(field_types()))
        if unknown:
            raise ConfigError(unknown_key_message(unknown[0]))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-ready values (lists, not tuples), in declaration order."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        }

    def dump_yaml(self, path: Union[str, os.PathLike], overwrite: bool = True) -> Path:
        """Write the full configuration as YAML, atomically (temp file + rename)."""
        path = Path(path)
        if not overwrite and path.exists():
            raise FileExistsError(f"{path}: exists (refusing to overwrite)")
        text = "# DeepLabV3 configuration (every field, resolved)\n" + yaml.safe_dump(
            self.to_dict(), sort_keys=False, default_flow_style=None
        )
        return write_bytes_atomically(path, text.encode())


def field_types() -> dict[str, Any]:
    """Field name -> resolved annotation, in declaration order."""
    return _FIELD_TYPES


def unknown_key_message(key: str) -> str:
    import difflib

    names = list(field_types())
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    if not close:
        close = [name for name in names if key.lower() in name or name in key.lower()][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(names)}"
    return f"unknown config key {key!r}{hint}"


def _range_problems(cfg: Config) -> typing.Iterator[tuple[str, str]]:
    """(field, what is wrong) for every value outside its valid range; first one is reported."""
    positive = ("learning_rate", "lr_power", "lr_decay_rate", "loss_scale", "crop_size", "seg_num_classes",
                "aspp_channels", "epoch_size", "batch_size", "eval_batch_size", "lr_decay_step",
                "save_checkpoint_steps", "save_checkpoint_num", "min_scale",
                "log_every_steps", "train_eval_scale")
    for name in positive:
        if getattr(cfg, name) <= 0:
            yield name, "must be > 0"
    for name in ("end_lr", "warmup_steps", "warmup_epochs", "weight_decay", "threads", "ignore_label",
                 "global_batch_size", "lr_reference_batch", "eval_every_epochs", "num_parallel_workers",
                 "save_checkpoint_seconds", "timing_every_steps"):
        if getattr(cfg, name) < 0:
            yield name, "must be >= 0"
    if cfg.warmup_steps > 0 and cfg.warmup_epochs > 0:
        yield "warmup_epochs", f"set warmup_steps ({cfg.warmup_steps}) or warmup_epochs, not both"
    if not 0 <= cfg.momentum < 1:
        yield "momentum", "must be in [0, 1)"
    if not 0 <= cfg.dropout < 1:
        yield "dropout", "must be in [0, 1)"
    if cfg.max_scale < cfg.min_scale:
        yield "max_scale", f"must be >= min_scale ({cfg.min_scale})"
    for name in ("image_mean", "image_std"):
        if len(getattr(cfg, name)) != 3:
            yield name, "must have 3 values (B, G, R)"
    if any(std <= 0 for std in cfg.image_std):
        yield "image_std", "must be > 0"
    if not cfg.eval_scales or any(scale <= 0 for scale in cfg.eval_scales):
        yield "eval_scales", "must be a non-empty list of positive scales"
    if cfg.image_pyramid is not None and (not cfg.image_pyramid or any(s <= 0 for s in cfg.image_pyramid)):
        yield "image_pyramid", "must be null or a non-empty list of positive scales"
    if cfg.output_stride not in (8, 16):
        yield "output_stride", "must be 8 or 16"
    if cfg.atrous_rates is not None and (len(cfg.atrous_rates) != 3 or min(cfg.atrous_rates) < 1):
        yield "atrous_rates", "must be null or three positive rates (the ASPP's three atrous branches)"
    if len(cfg.multi_grid) != 3 or min(cfg.multi_grid) < 1:
        yield "multi_grid", "must be three positive rates (one per unit of the last block)"
    if cfg.decoder_output_stride is not None and (
        cfg.decoder_output_stride not in (4, 8) or cfg.decoder_output_stride >= cfg.output_stride
    ):
        yield "decoder_output_stride", f"must be null, 4 or 8, and below output_stride ({cfg.output_stride})"
    if cfg.ignore_label < cfg.seg_num_classes:
        yield "ignore_label", f"must not be a class index (seg_num_classes is {cfg.seg_num_classes})"
    for name in ("train_split", "val_split"):
        if not getattr(cfg, name).strip():
            yield name, "must not be empty"


_FIELD_TYPES: dict[str, Any] = {
    field.name: typing.get_type_hints(Config)[field.name] for field in dataclasses.fields(Config)
}
