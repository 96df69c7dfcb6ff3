"""deeplab-infer: segment images with a DeepLabV3 checkpoint; write colour masks and overlays.

Usage:
    deeplab-infer --config NAME|FILE.yaml --ckpt FILE IMAGE... --out DIR
                  [--scales 1.0 ...] [--flip] [--force] [--set key=value ...]
                  [--device-target CPU|GPU|Ascend] [--pynative]

--ckpt takes a deeplab-train checkpoint or any layout deeplab-convert knows (converted on
the fly, every parameter required). --pynative runs the network eagerly (no graph compile:
quicker for a few images); MindSpore 2.10's first-call failure in PyNative mode under NumPy 2
is absorbed before the network runs (deeplab/predict.py).

For each IMAGE (anything OpenCV reads) it writes, in --out (created if missing):
    <name>.png           the class mask as a VOC palette PNG (pixel value = class index,
                         shown in VOC colours by any image viewer)
    <name>_overlay.jpg   the image blended with the coloured mask
where <name> is the image's file name without its extension. Existing outputs are kept
unless --force. Prediction is the same multi-scale (+ flip) procedure as deeplab-eval
(default scales: the config's eval_scales). Every file is written under a temporary name
and renamed.

Exit status: 0 done; 2 bad input (unreadable image, missing or corrupt checkpoint,
checkpoint of another model, unknown config key, outputs that exist, two images with
the same name), one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from deeplab import runtime
from deeplab.atomic_write import write_bytes_atomically
from deeplab.checkpoints import CheckpointError
from deeplab.config import ConfigError
from deeplab.data.errors import DataError

EXIT_BAD_INPUT = 2
OVERLAY_ALPHA = 0.5  # weight of the coloured mask in the overlay


class UsageError(ValueError):
    """A bad flag or path; the message is the one line shown to the user."""


USER_ERRORS = (UsageError, ConfigError, DataError, CheckpointError)


def output_paths(image: Path, out_dir: Path) -> tuple[Path, Path]:
    return out_dir / f"{image.stem}.png", out_dir / f"{image.stem}_overlay.jpg"


@dataclass(frozen=True)
class InferOptions:
    config: str
    ckpt: Path
    images: tuple[Path, ...]
    out_dir: Path
    scales: Optional[tuple[float, ...]] = None
    flip: Optional[bool] = None
    force: bool = False
    overrides: tuple[str, ...] = ()
    device_target: str = "CPU"
    pynative: bool = False

    def __post_init__(self) -> None:
        if not self.images:
            raise UsageError("no IMAGE given")
        if not Path(self.ckpt).is_file():
            raise UsageError(f"--ckpt {self.ckpt}: no such file")
        if self.scales is not None and (not self.scales or min(self.scales) <= 0):
            raise UsageError(f"--scales {' '.join(map(str, self.scales))}: scales must be positive")
        if Path(self.out_dir).exists() and not Path(self.out_dir).is_dir():
            raise UsageError(f"--out {self.out_dir}: exists and is not a directory")
        seen: dict[str, Path] = {}
        for image in self.images:
            if not Path(image).is_file():
                raise UsageError(f"{image}: no such image file")
            if image.stem in seen:
                raise UsageError(f"{image}: same output name {image.stem!r} as {seen[image.stem]}")
            seen[image.stem] = image
            for path in output_paths(image, Path(self.out_dir)):
                if path.exists() and not self.force:
                    raise UsageError(f"--out {self.out_dir}: {path.name} exists (pass --force to overwrite)")


def overlay(image_bgr: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """The BGR image blended with the VOC-coloured mask (void/255 pixels keep the image)."""
    from deeplab.data.voc import colorize

    colour_bgr = colorize(mask)[:, :, ::-1].astype(np.float32)
    blended = (1.0 - alpha) * image_bgr.astype(np.float32) + alpha * colour_bgr
    keep = (mask == 255)[:, :, None]
    return np.where(keep, image_bgr, np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def _write_jpeg(path: Path, image_bgr: np.ndarray) -> None:
    import cv2

    ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    write_bytes_atomically(path, encoded.tobytes())


def infer(opts: InferOptions, progress=print) -> list[tuple[Path, Path]]:
    """Segment every image; returns the (mask, overlay) paths written."""
    from deeplab.config import load_config

    cfg = load_config(opts.config, overrides=opts.overrides)
    ms = runtime.start_mindspore(opts.device_target, runtime.resolve_threads(cfg.threads))
    if opts.pynative:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    from deeplab.data.pipeline import read_image
    from deeplab.data.voc import write_palette_png
    from deeplab.predict import PredictSettings, load_predictor

    images = [read_image(path) for path in opts.images]  # DataError names an undecodable file
    settings = PredictSettings(crop_size=cfg.crop_size,
                               scales=tuple(opts.scales) if opts.scales else tuple(cfg.eval_scales),
                               flip=cfg.flip if opts.flip is None else opts.flip,
                               mean=tuple(cfg.image_mean), std=tuple(cfg.image_std), batch_size=1)
    predictor = load_predictor(cfg, opts.ckpt, settings)
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, image in zip(opts.images, images):
        mask = predictor.predict([image])[0]
        mask_path, overlay_path = output_paths(path, out_dir)
        write_palette_png(mask_path, mask)
        _write_jpeg(overlay_path, overlay(image, mask))
        written.append((mask_path, overlay_path))
        progress(f"{path} -> {mask_path}, {overlay_path}", flush=True)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="deeplab-infer", description="Segment images with DeepLabV3.",
                                     epilog="See the module docstring (python -m pydoc deeplab.infer) for details.")
    parser.add_argument("--config", required=True, help="preset name or YAML file")
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--scales", type=float, nargs="+", default=None)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--device-target", default="CPU", choices=runtime.DEVICE_TARGETS)
    parser.add_argument("--pynative", action="store_true", help="PyNative mode (no graph compile)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = InferOptions(config=args.config, ckpt=args.ckpt, images=tuple(args.images), out_dir=args.out,
                            scales=tuple(args.scales) if args.scales else None, flip=args.flip,
                            force=args.force, overrides=tuple(args.overrides), device_target=args.device_target,
                            pynative=args.pynative)
        infer(opts)
    except USER_ERRORS as err:
        print(f"deeplab-infer: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
