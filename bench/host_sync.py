"""Does reading the loss back every step (``asnumpy``) cost anything on the CPU? (JSON on stdout)

    .venv/bin/python bench/host_sync.py [--steps 20] [--rounds 2] [--threads 1] [--batch 4]

tiny_synthetic's train step (deeplab's model and loss, Momentum) on a random batch in
GRAPH_MODE, timed two ways in alternating rounds: ``asnumpy()`` after every step, and only
after the last one. Beside each it records how long the ``train_step(...)`` call itself took
to return: when that is the whole step, execution is synchronous and the per-step read-back
is free (then log_every_steps > 1 buys nothing on this device). Load averages printed beside.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    if min(args.steps, args.rounds, args.threads, args.batch) < 1:
        print("host_sync: --steps, --rounds, --threads and --batch must be >= 1", file=sys.stderr)
        return 2
    from deeplab import runtime

    ms = runtime.start_mindspore("CPU", args.threads, seed=1)
    import numpy as np
    from mindspore import nn

    from deeplab.config import load_config
    from deeplab.loss import NetWithLoss, SoftmaxCrossEntropyLoss
    from deeplab.model import build_model

    cfg = load_config("tiny_synthetic")
    net = NetWithLoss(build_model(cfg), SoftmaxCrossEntropyLoss(cfg.seg_num_classes, cfg.ignore_label))
    step = nn.TrainOneStepCell(net, nn.Momentum(net.trainable_params(), 0.01, 0.9))
    step.set_train(True)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.random((args.batch, 3, cfg.crop_size, cfg.crop_size), dtype=np.float32))
    y = ms.Tensor(rng.integers(0, cfg.seg_num_classes, (args.batch, cfg.crop_size, cfg.crop_size)).astype(np.int32))
    step(x, y).asnumpy()  # compile
    runs: dict[str, list[dict]] = {"read_every_step": [], "read_at_end": []}
    for _ in range(args.rounds):
        for name in runs:
            before = os.getloadavg()[0]
            calls = 0.0
            start = time.perf_counter()
            for _ in range(args.steps):
                call = time.perf_counter()
                out = step(x, y)
                calls += time.perf_counter() - call
                if name == "read_every_step":
                    out.asnumpy()
            out.asnumpy()
            total = time.perf_counter() - start
            runs[name].append({"step_ms": round(total * 1000 / args.steps, 2),
                               "call_returns_ms": round(calls * 1000 / args.steps, 2),
                               "load_1m": [round(before, 2), round(os.getloadavg()[0], 2)]})
    medians = {name: statistics.median(r["step_ms"] for r in rs) for name, rs in runs.items()}
    print(json.dumps({"threads": args.threads, "batch": args.batch, "steps": args.steps, "rounds": args.rounds,
                      "median_step_ms": medians,
                      "per_step_read_back_cost_ms": round(medians["read_every_step"] - medians["read_at_end"], 2),
                      "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
