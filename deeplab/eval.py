"""deeplab-eval: mean IoU of a DeepLabV3 checkpoint on a VOC-layout validation split.

Usage:
    deeplab-eval --config NAME|FILE.yaml --data-root DIR --ckpt FILE
                 [--scales 0.5 0.75 1.0 ...] [--flip] [--output eval.json] [--force]
                 [--set key=value ...] [--split NAME] [--device-target CPU|GPU|Ascend]

--scales    evaluation scales (default: the config's eval_scales); --flip adds mirrored
            inputs (default: the config's flip). Prediction follows the reference: long side
            resized to (crop_size - 1) * scale + 1, padded with the mean, softmax, valid
            region resized back to the original size, probabilities summed, argmax.
--ckpt      a deeplab-train checkpoint, a saved network, or any layout deeplab-convert knows
            (the MindSpore model zoo's DeepLabV3, bare or network.-prefixed): converted on the
            fly, every parameter of the config's model required
--split     the list to evaluate (default: the config's val_split)
--output    where to write the result JSON; an existing file is kept unless --force

Prints a per-class IoU table (classes absent from both ground truth and prediction show
"n/a" and are left out of the mean), then the line ``mIoU = 0.65049``. The JSON is
    {"mIoU": float, "per_class_iou": {class name: float | null}, "ckpt": path,
     "scales": [...], "flip": bool, "num_images": int,
     "config": NAME|FILE, "overrides": [--set ...], "data_root": path, "split": name,
     "confusion_matrix": [[pixels of ground truth i predicted as j, ...], ...]  (rows: ground truth),
     "per_image": [{"name": id, "mIoU": float | null, "image": path | null, "label": path | null}, ...]}
written atomically (temporary name, then rename). collect-results draws the confusion matrix
and picks sample predictions (the worst by mIoU among them) from it.

CPU threads: cfg.threads, else OMP_NUM_THREADS, else all usable cores.
Exit status: 0 done; 2 bad input (missing data root or checkpoint, corrupt checkpoint,
checkpoint of another model, unknown config key, bad label file, existing --output),
one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from console_progress import progress
from deeplab import runtime
from deeplab.atomic_write import write_bytes_atomically
from deeplab.checkpoints import CheckpointError
from deeplab.config import ConfigError
from deeplab.data.errors import DataError

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """A bad flag or path; the message is the one line shown to the user."""


USER_ERRORS = (UsageError, ConfigError, DataError, CheckpointError)


@dataclass(frozen=True)
class EvalOptions:
    config: str
    data_root: Path
    ckpt: Path
    scales: Optional[tuple[float, ...]] = None
    flip: Optional[bool] = None
    output: Optional[Path] = None
    force: bool = False
    overrides: tuple[str, ...] = ()
    split: Optional[str] = None
    device_target: str = "CPU"

    def __post_init__(self) -> None:
        if not Path(self.data_root).is_dir():
            raise UsageError(f"--data-root {self.data_root}: no such directory")
        if not Path(self.ckpt).is_file():
            raise UsageError(f"--ckpt {self.ckpt}: no such file")
        if self.scales is not None and (not self.scales or min(self.scales) <= 0):
            raise UsageError(f"--scales {' '.join(map(str, self.scales))}: scales must be positive")
        if self.output is not None:
            if Path(self.output).exists() and not self.force:
                raise UsageError(f"--output {self.output}: exists (pass --force to overwrite)")
            if not Path(self.output).resolve().parent.is_dir():
                raise UsageError(f"--output {self.output}: its directory does not exist")


@dataclass(frozen=True)
class ImageScore:
    """One validation image's own mIoU; image/label are None for MindRecord data (no files)."""

    name: str
    miou: float
    image: Optional[str]
    label: Optional[str]

    def to_json(self) -> dict:
        return {"name": self.name, "mIoU": None if math.isnan(self.miou) else self.miou,
                "image": self.image, "label": self.label}


@dataclass(frozen=True)
class EvalResult:
    miou: float
    per_class_iou: dict[str, Optional[float]]
    ckpt: str
    scales: tuple[float, ...]
    flip: bool
    num_images: int
    confusion_matrix: tuple[tuple[int, ...], ...] = ()
    per_image: tuple[ImageScore, ...] = ()
    config: Optional[str] = None
    overrides: tuple[str, ...] = ()
    data_root: Optional[str] = None
    split: Optional[str] = None

    def to_json(self) -> dict:
        return {"mIoU": None if math.isnan(self.miou) else self.miou, "per_class_iou": self.per_class_iou, "ckpt": self.ckpt,
                "scales": list(self.scales), "flip": self.flip, "num_images": self.num_images,
                "config": self.config, "overrides": list(self.overrides), "data_root": self.data_root, "split": self.split,
                "confusion_matrix": [list(row) for row in self.confusion_matrix],
                "per_image": [score.to_json() for score in self.per_image]}


def class_names(num_classes: int) -> list[str]:
    from deeplab.data.voc import CLASS_NAMES

    if num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [f"class_{index}" for index in range(num_classes)]


def format_iou_table(per_class: dict[str, Optional[float]]) -> str:
    width = max(len(name) for name in per_class)
    lines = [f"{'class':<{width}}  IoU"]
    for name, iou in per_class.items():
        lines.append(f"{name:<{width}}  {'n/a' if iou is None else f'{iou:.5f}'}")
    return "\n".join(lines)


def format_miou_line(miou: float) -> str:
    return f"mIoU = {miou:.5f}"


def write_json_atomically(path: Path, payload: dict) -> None:
    write_bytes_atomically(path, (json.dumps(payload, indent=2) + "\n").encode())


def evaluate(opts: EvalOptions, show_progress: bool = False) -> EvalResult:
    """Evaluate as the options say; usable from Python and tests without argv."""
    from deeplab.config import load_config

    cfg = load_config(opts.config, overrides=opts.overrides)

    threads = runtime.resolve_threads(cfg.threads)
    runtime.start_mindspore(opts.device_target, threads)
    from deeplab.data.pipeline import build_eval_samples
    from deeplab.metrics import confusion_matrix, mean_iou, per_class_iou
    from deeplab.predict import PredictSettings, load_predictor

    scales = tuple(opts.scales) if opts.scales is not None else tuple(cfg.eval_scales)
    flip = cfg.flip if opts.flip is None else opts.flip
    samples = build_eval_samples(cfg, opts.data_root, split=opts.split)
    settings = PredictSettings(crop_size=cfg.crop_size, scales=scales, flip=flip, mean=tuple(cfg.image_mean),
                               std=tuple(cfg.image_std), batch_size=cfg.eval_batch_size)
    predictor = load_predictor(cfg, opts.ckpt, settings)

    total = len(samples)
    matrix = np.zeros((cfg.seg_num_classes, cfg.seg_num_classes), dtype=np.int64)
    count = 0
    batch_images: list[np.ndarray] = []
    batch_labels: list[np.ndarray] = []
    batch_names: list[str] = []
    scores: list[ImageScore] = []
    files = sample_files(samples)

    meter = progress(total, "images", "deeplab-eval", enabled=show_progress)

    def flush() -> None:
        nonlocal matrix, count
        for name, label, pred in zip(batch_names, batch_labels, predictor.predict(batch_images)):
            image_matrix = confusion_matrix(label, pred, cfg.seg_num_classes, cfg.ignore_label)
            matrix += image_matrix
            image_path, label_path = files.get(name, (None, None))
            scores.append(ImageScore(name, mean_iou(per_class_iou(image_matrix)), image_path, label_path))
            count += 1
        meter.update(len(batch_labels))
        batch_images.clear()
        batch_labels.clear()
        batch_names.clear()

    for image, label, name in samples:
        batch_images.append(image)
        batch_labels.append(label)
        batch_names.append(name)
        if len(batch_images) == cfg.eval_batch_size:
            flush()
    if batch_images:
        flush()
    meter.close()
    if count == 0:
        raise UsageError(f"--data-root {opts.data_root}: split {opts.split or cfg.val_split!r} has no images")
    iou = per_class_iou(matrix)
    per_class = {name: (None if math.isnan(value) else float(value))
                 for name, value in zip(class_names(cfg.seg_num_classes), iou)}
    return EvalResult(miou=mean_iou(iou), per_class_iou=per_class, ckpt=str(Path(opts.ckpt).resolve()),
                      scales=scales, flip=flip, num_images=count,
                      confusion_matrix=tuple(tuple(int(v) for v in row) for row in matrix), per_image=tuple(scores),
                      config=config_reference(opts.config), overrides=opts.overrides,
                      data_root=str(Path(opts.data_root).resolve()), split=samples.split)


def config_reference(config: str) -> str:
    """A preset name as given, a YAML file as an absolute path (so another directory can reuse it)."""
    return str(Path(config).resolve()) if Path(config).is_file() else config


def sample_files(samples) -> dict[str, tuple[str, str]]:
    """Image and label file of each sample by name; none for MindRecord data (its samples are records)."""
    if samples.root.kind == "mindrecord":
        return {}
    return {s.name: (str(s.image.resolve()), str(s.label.resolve())) for s in samples.root.samples(samples.split)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="deeplab-eval", description="Mean IoU of a DeepLabV3 checkpoint.",
                                     epilog="See the module docstring (python -m pydoc deeplab.eval) for details.")
    parser.add_argument("--config", required=True, help="preset name or YAML file")
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint file (*.ckpt)")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="default: config eval_scales")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="add mirrored inputs (default: config flip)")
    parser.add_argument("--output", type=Path, default=None, help="write the result JSON here")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--split", default=None, help="split list to evaluate (default: config val_split)")
    parser.add_argument("--device-target", default="CPU", choices=runtime.DEVICE_TARGETS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = EvalOptions(config=args.config, data_root=args.data_root, ckpt=args.ckpt,
                           scales=tuple(args.scales) if args.scales else None, flip=args.flip,
                           output=args.output, force=args.force, overrides=tuple(args.overrides),
                           split=args.split, device_target=args.device_target)
        result = evaluate(opts, show_progress=True)
    except USER_ERRORS as err:
        print(f"deeplab-eval: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    print(format_iou_table(result.per_class_iou))
    print(format_miou_line(result.miou), flush=True)
    if opts.output is not None:
        write_json_atomically(opts.output, result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main())
