"""deeplab-convert: turn an official or ImageNet checkpoint into one of this project's.

Usage:
    deeplab-convert --config NAME|FILE.yaml IN OUT.ckpt [--set key=value ...] [--force]

IN is any layout deeplab.convert knows, recognised from its parameter names:
    deeplab                    this project's (deeplab-train checkpoints, saved networks)
    deeplab-backbone           this project's ResNet trunk saved on its own
    mindspore-zoo-deeplabv3    the MindSpore model zoo's DeepLabV3, bare or network.-prefixed, OS16/OS8
    mindspore-zoo-resnet       the zoo's ResNet-50/101 ImageNet checkpoints (down_sample_layer, end_point)
    torchvision-resnet         torchvision resnet50/101 state dicts (.safetensors; .pth needs PyTorch)
    torchvision-deeplabv3      torchvision deeplabv3_resnet50/101 state dicts
The config says which model the weights are for (backbone, class count): every weight is
checked against that model's parameter shapes. OUT holds the converted weights under this
project's bare-network names (``backbone.*``, ``head.*``), with MindSpore's CRC, written
under a temporary name and renamed; an existing OUT is kept unless --force.

It prints what it loaded, what it skipped and why (an ImageNet classifier; a classifier
for another class count, which is then left to fresh initialisation) and which of the
model's parameters the input does not provide (a backbone-only checkpoint: the head).
The same conversion runs by itself behind deeplab-eval/-infer/-export ``--ckpt`` and
deeplab-train's ``ckpt_pre_trained``: converting first only saves doing it every time.

Exit status: 0 done; 2 bad input (unknown layout, a weight whose shape differs from the
model's - named -, unreadable file, existing OUT), one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from deeplab.checkpoints import CheckpointError, check_checkpoint_file
from deeplab.config import ConfigError

EXIT_BAD_INPUT = 2


class UsageError(ValueError):
    """A bad flag or path; the message is the one line shown to the user."""


def convert(config: str, source: Path, out: Path, overrides: Sequence[str] = (), force: bool = False,
            progress=print, show_progress: bool = False):
    """Convert ``source`` for the config's model and write ``out``; returns the Conversion."""
    from deeplab.config import load_config

    source, out = Path(source), Path(out)
    cfg = load_config(config, overrides=overrides)
    if out.exists() and not force:
        raise UsageError(f"OUT {out}: exists (pass --force to replace it)")
    if not out.parent.is_dir():
        raise UsageError(f"OUT {out}: directory {out.parent} does not exist")
    if out.suffix != ".ckpt":
        raise UsageError(f"OUT {out}: must end in .ckpt")
    try:
        check_checkpoint_file(source, what="IN")
    except CheckpointError as err:
        raise UsageError(str(err)) from None

    from deeplab import runtime

    ms = runtime.start_mindspore("CPU", runtime.resolve_threads(cfg.threads))
    from deeplab.checkpoints import write_weights
    from deeplab.convert.load import convert_file, model_shapes
    from deeplab.model import build_model

    from console_progress import progress as meter_for

    shapes = model_shapes(build_model(cfg))
    # Reading and writing a large checkpoint are one call each; the meter counts those and every weight between.
    with meter_for(len(shapes) + 2, "steps", "deeplab-convert", enabled=show_progress) as meter:
        conversion = convert_file(source, shapes, complete=False, what="IN")
        meter.update()
        entries = []
        for name in shapes:
            if name in conversion.weights:
                entries.append({"name": name, "data": ms.Tensor(conversion.weights[name])})
            meter.update()
        write_weights(entries, out)
        meter.update()
    for line in conversion.summary():
        progress(line, flush=True)
    progress(f"wrote {out}", flush=True)
    return conversion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="deeplab-convert",
                                     description="Convert an official/ImageNet checkpoint to this project's layout.",
                                     epilog="See the module docstring (python -m pydoc deeplab.convert.cli).")
    parser.add_argument("--config", required=True, help="preset name or YAML file of the target model")
    parser.add_argument("source", type=Path, metavar="IN", help=".ckpt, .safetensors or .pth")
    parser.add_argument("out", type=Path, metavar="OUT", help="the .ckpt to write")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        convert(args.config, args.source, args.out, tuple(args.overrides), args.force, show_progress=True)
    except (UsageError, ConfigError, CheckpointError) as err:
        print(f"deeplab-convert: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
