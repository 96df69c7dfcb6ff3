"""deeplab-info: what network a config builds -- size, shapes, strides -- as JSON.

Usage:
    deeplab-info --config NAME|FILE.yaml [--crop N] [--batch N] [--set key=value ...]

Builds the model of the config (fresh weights), runs one forward pass on a zero image
batch of --batch x 3 x crop x crop (default crop: the config's crop_size; GRAPH_MODE, so
the time includes the graph compile) and prints one JSON object:

    {"config": ..., "backbone": "resnet101", "output_stride": 16, "atrous_rates": [6, 12, 18],
     "multi_grid": [1, 2, 4], "decoder_output_stride": null, "image_pyramid": null,
     "aspp_channels": 256, "num_classes": 21, "fine_tune_batch_norm": false,
     "params": 58040661, "params_millions": 58.04, "params_with_bn_statistics": ...,
     "input_shape": [1, 3, 513, 513], "feature_shape": [1, 2048, 33, 33],
     "output_shape": [1, 21, 513, 513], "forward_s": ... (compile + run)}

``params`` counts trainable parameters (what papers and model zoos report); batch-norm
moving statistics are MindSpore parameters too and are added in
``params_with_bn_statistics``. ``feature_shape`` is the backbone output fed to the ASPP.

CPU threads: cfg.threads, else OMP_NUM_THREADS, else all usable cores.
Exit status: 0 done; 2 bad input (unknown config or key, bad value, --crop < 1),
one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Optional, Sequence

from deeplab.config import Config, ConfigError, load_config

EXIT_BAD_INPUT = 2


def feature_size(crop: int, output_stride: int) -> int:
    """Side of the backbone's last feature map: each stride-2 layer maps n to (n - 1) // 2 + 1."""
    return (crop - 1) // output_stride + 1


def describe(cfg: Config, config_name: str, batch: int = 1) -> dict[str, Any]:
    """Build cfg's model, run it once, and report its size and shapes."""
    from deeplab import runtime

    # GRAPH_MODE even for one pass: with NumPy 2 some MindSpore 2.10 PyNative ops fail to run.
    ms = runtime.start_mindspore("CPU", runtime.resolve_threads(cfg.threads))
    import numpy as np

    from deeplab.model import ImagePyramid, build_model, count_parameters

    net = build_model(cfg)
    net.set_train(False)
    images = ms.Tensor(np.zeros((batch, 3, cfg.crop_size, cfg.crop_size), np.float32))
    start = time.perf_counter()
    output = net(images)
    forward_s = time.perf_counter() - start
    params = count_parameters(net)
    side = feature_size(cfg.crop_size, cfg.output_stride)
    backbone = net.net.backbone if isinstance(net, ImagePyramid) else net.backbone
    channels = backbone.stage_channels[-1]
    return {
        "config": config_name,
        "backbone": cfg.backbone,
        "output_stride": cfg.output_stride,
        "atrous_rates": list(cfg.effective_atrous_rates),
        "multi_grid": list(cfg.multi_grid),
        "decoder_output_stride": cfg.decoder_output_stride,
        "image_pyramid": list(cfg.image_pyramid) if cfg.image_pyramid is not None else None,
        "aspp_channels": cfg.aspp_channels,
        "num_classes": cfg.seg_num_classes,
        "fine_tune_batch_norm": cfg.fine_tune_batch_norm,
        "params": params,
        "params_millions": round(params / 1e6, 2),
        "params_with_bn_statistics": count_parameters(net, trainable_only=False),
        "input_shape": list(images.shape),
        "feature_shape": [batch, channels, side, side],
        "output_shape": list(output.shape),
        "forward_s": round(forward_s, 3),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="deeplab-info", description="Size and shapes of a DeepLabV3 config's model.",
                                     epilog="See the module docstring (python -m pydoc deeplab.info) for details.")
    parser.add_argument("--config", required=True, help="preset name or YAML file")
    parser.add_argument("--crop", type=int, default=None, help="input side (default: the config's crop_size)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.batch < 1:
            raise ConfigError(f"--batch {args.batch}: must be >= 1")
        overrides = list(args.overrides)
        if args.crop is not None:
            if args.crop < 1:
                raise ConfigError(f"--crop {args.crop}: must be >= 1")
            overrides.append(f"crop_size={args.crop}")
        cfg = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"deeplab-info: {err}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    print(json.dumps(describe(cfg, args.config, args.batch), indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
