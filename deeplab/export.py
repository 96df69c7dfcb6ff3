"""deeplab-export: turn a DeepLabV3 checkpoint into a deployable MindIR model.

Usage:
    deeplab-export --config NAME|FILE.yaml --ckpt FILE [--format MINDIR] [--crop N]
                   [--batch N] [--out FILE] [--force] [--set key=value ...] [--pynative]

Builds the config's model, loads the checkpoint (a deeplab-train checkpoint, a saved
network, or any other layout deeplab-convert knows, e.g. the MindSpore model zoo's DeepLabV3:
converted on the fly, every parameter required), switches it to inference (dropout off, batch norm on its moving
statistics) and exports the graph for a fixed float32 input of --batch x 3 x crop x crop
(default crop: the config's crop_size, default batch 1). The exported model maps NCHW
images, normalised like the training input, to NCHW logits at the input size.

Load it back with:
    graph = mindspore.load("deeplabv3.mindir"); net = mindspore.nn.GraphCell(graph)

--out defaults to ``deeplabv3_<config>_<crop>.mindir`` in the current directory. The file
is written under a temporary name and renamed; an existing --out is kept unless --force.
--pynative runs MindSpore in PyNative mode (as a notebook would); MindSpore 2.10's first-call
failure there under NumPy 2 is absorbed before the network runs (deeplab/predict.py).

Exit status: 0 done; 2 bad input (missing or corrupt checkpoint, checkpoint of another
model, unknown config key, existing --out), one line on stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from deeplab.atomic_write import staged_file
from deeplab.checkpoints import CheckpointError, check_checkpoint_file
from deeplab.config import ConfigError, load_config

EXIT_BAD_INPUT = 2
FORMATS = {"MINDIR": ".mindir"}


class UsageError(ValueError):
    """A bad flag or path; the message is the one line shown to the user."""


@dataclass(frozen=True)
class ExportOptions:
    config: str
    ckpt: Path
    file_format: str = "MINDIR"
    crop: Optional[int] = None
    batch: int = 1
    out: Optional[Path] = None
    force: bool = False
    overrides: tuple[str, ...] = ()
    pynative: bool = False

    def __post_init__(self) -> None:
        if self.file_format not in FORMATS:
            raise UsageError(f"--format {self.file_format}: must be one of {', '.join(FORMATS)}")
        if self.crop is not None and self.crop < 1:
            raise UsageError(f"--crop {self.crop}: must be >= 1")
        if self.batch < 1:
            raise UsageError(f"--batch {self.batch}: must be >= 1")


def default_output(config: str, crop: int, file_format: str) -> Path:
    return Path(f"deeplabv3_{Path(config).stem}_{crop}{FORMATS[file_format]}")


def export_model(opts: ExportOptions) -> Path:
    """Export the checkpoint's network; returns the written file."""
    check_checkpoint_file(Path(opts.ckpt))  # before MindSpore loads: bad input fails fast
    overrides = list(opts.overrides) + ([f"crop_size={opts.crop}"] if opts.crop is not None else [])
    cfg = load_config(opts.config, overrides)
    out = Path(opts.out) if opts.out is not None else default_output(opts.config, cfg.crop_size, opts.file_format)
    if out.exists() and not opts.force:
        raise UsageError(f"--out {out}: already exists (pass --force to replace it)")
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist")

    from deeplab import runtime

    ms = runtime.start_mindspore("CPU", runtime.resolve_threads(cfg.threads))
    import numpy as np

    from deeplab.predict import absorb_numpy2_first_call_error, load_network

    if opts.pynative:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    network = load_network(cfg, opts.ckpt)
    absorb_numpy2_first_call_error()
    example = ms.Tensor(np.zeros((opts.batch, 3, cfg.crop_size, cfg.crop_size), np.float32))
    # MindSpore appends the format's suffix to file_name; export next to --out, then rename.
    with staged_file(out) as staged:
        stem = staged.parent / "model"
        ms.export(network, example, file_name=str(stem), file_format=opts.file_format)
        written = stem.with_suffix(FORMATS[opts.file_format])
        if not written.is_file():
            raise RuntimeError(f"mindspore.export wrote no {written.name}")
        # MindSpore leaves the file owner-read-only (0400); a deployable model gets the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(written, 0o666 & ~umask)
        os.replace(written, staged)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="deeplab-export", description="Export a DeepLabV3 checkpoint to MindIR.",
                                     epilog="See the module docstring (python -m pydoc deeplab.export) for details.")
    parser.add_argument("--config", required=True, help="preset name or YAML file")
    parser.add_argument("--ckpt", required=True, type=Path, help="checkpoint file (*.ckpt)")
    parser.add_argument("--format", dest="file_format", default="MINDIR", type=str.upper,
                        help="export format (MINDIR)")
    parser.add_argument("--crop", type=int, default=None, help="input side (default: the config's crop_size)")
    parser.add_argument("--batch", type=int, default=1, help="input batch size (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="output file")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--pynative", action="store_true", help="PyNative mode instead of graph mode")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        opts = ExportOptions(config=args.config, ckpt=args.ckpt, file_format=args.file_format, crop=args.crop,
                             batch=args.batch, out=args.out, force=args.force, overrides=tuple(args.overrides),
                             pynative=args.pynative)
        out = export_model(opts)
    except (UsageError, ConfigError, CheckpointError) as err:
        print(f"deeplab-export: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    print(f"exported {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
