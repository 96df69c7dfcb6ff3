"""Graph compile time of the fused gradient reducer: loops + slices (today) vs comprehensions + ops.split (JSON).

    .venv/bin/python bench/grad_reducer_compile.py [--config tiny_synthetic] [--rounds 3]

deeplab/grad_fusion.py's FusedGradReducer is compiled into the first step of every CPU
data-parallel rank, so its compile time is start-up time of every job, restart and test.
Each round compiles, each in a fresh process (no compile cache, nothing warm), in
alternating order:

    loops_and_slices   FusedGradReducer as it is: tuples built by loops, slices back
    comprehensions_split  the same maths as it was first written: list/tuple
                       comprehensions and one N-way ``ops.split`` (kept here as the peer)
    no_reducer         the config's gradients times a scalar: the floor any cell over
                       that many tensors pays

on the config's trainable-parameter shapes, with the AllReduce replaced by an identity
(a single process has no collective group; the all-reduce is one op either way). The
output is checked against the input. Prints medians and every round, with the load
averages before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VARIANTS = ("loops_and_slices", "comprehensions_split", "no_reducer")

CHILD = r"""
import sys, time
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from deeplab.config import load_config
from deeplab.grad_fusion import FusedGradReducer
from deeplab.model.builders import build_model

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
variant, config = sys.argv[1], sys.argv[2]
params = build_model(load_config(config)).trainable_params()
shapes = tuple(tuple(p.shape) for p in params)
sizes = tuple(int(np.prod(s)) for s in shapes)


class ComprehensionsSplit(nn.Cell):
    def construct(self, grads):
        flat = ops.concat([ops.reshape(g, (-1,)) for g in grads]) * 0.5
        parts = ops.split(flat, sizes)
        return tuple(ops.reshape(p, s) for p, s in zip(parts, shapes))


class NoReducer(nn.Cell):
    def construct(self, grads):
        return tuple(g * 0.5 for g in grads)


if variant == "loops_and_slices":
    cell = FusedGradReducer(params, rank_size=2)
    cell.all_reduce = ops.Identity()
elif variant == "comprehensions_split":
    cell = ComprehensionsSplit()
else:
    cell = NoReducer()
rng = np.random.default_rng(0)
grads = tuple(Tensor(rng.random(s, dtype=np.float32)) for s in shapes)
start = time.perf_counter()
out = cell(grads)
compile_s = time.perf_counter() - start
assert all(np.allclose(o.asnumpy(), g.asnumpy() * 0.5) for o, g in zip(out, grads))
print(f"{compile_s:.4f} {len(shapes)} {sum(sizes)}")
"""


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


def compile_once(variant: str, config: str) -> tuple[float, int, int]:
    done = subprocess.run([sys.executable, "-c", CHILD, variant, config], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "GLOG_v": "3"}, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"grad_reducer_compile: {variant} failed: {done.stderr.strip().splitlines()[-1:]}")
    seconds, tensors, floats = done.stdout.split()[-3:]
    return float(seconds), int(tensors), int(floats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny_synthetic")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    before = load()
    rounds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    tensors = floats = 0
    for index in range(args.rounds):
        order = VARIANTS if index % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            seconds, tensors, floats = compile_once(variant, args.config)
            rounds[variant].append(round(seconds, 3))
    median = {v: round(statistics.median(r), 3) for v, r in rounds.items()}
    print(json.dumps({
        "config": args.config, "gradients": tensors, "floats": floats,
        "compile_s_median": median,
        "split_over_slices": round(median["comprehensions_split"] / median["loops_and_slices"], 2),
        "rounds": rounds, "load_before": before, "load_after": load(),
    }, indent=2))


if __name__ == "__main__":
    main()
