"""Graph compile time of the fused gradient reducer: HyperMaps (today) vs comprehensions + ops.split (JSON).

    .venv/bin/python bench/grad_reducer_compile.py [--config tiny_synthetic] [--rounds 3]

deeplab/grad_fusion.py's FusedGradReducer is compiled into the first step of every CPU
data-parallel rank, so its compile time is start-up time of every job, restart and test.
Each round compiles, each in a fresh process (no compile cache, nothing warm), in
alternating order:

    hypermap_slices       FusedGradReducer as it is: HyperMaps flatten and slice back
    comprehensions_split  the same maths as it was first written: list/tuple
                          comprehensions and one N-way ``ops.split`` (kept here as the peer)
    no_reducer            the config's gradients times a scalar (one HyperMap): the floor
                          any cell over that many tensors pays

A variant that fails to compile (ResNet-101's 332 gradients exceed MindSpore's call depth
limit through comprehensions) is reported with its error's last line instead of a time.

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
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_job import load  # noqa: E402  (the benches' one load-average reading)

VARIANTS = ("hypermap_slices", "comprehensions_split", "no_reducer")

PAYLOAD = Path(__file__).with_name("_grad_reducer_payload.py")


def compile_once(variant: str, config: str) -> dict:
    """{"compile_s", "gradients", "floats"}, or {"error": its last line} when it does not compile."""
    with tempfile.TemporaryDirectory() as scratch:  # MindSpore writes rank_0/om/analyze_fail.ir on failure
        done = subprocess.run([sys.executable, str(PAYLOAD), variant, config], capture_output=True, text=True,
                              cwd=scratch, env={**os.environ, "GLOG_v": "3"}, timeout=900)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Error" in line] or done.stderr.splitlines()[-1:]
        return {"error": errors[-1].strip() if errors else f"exit {done.returncode}"}
    seconds, tensors, floats = done.stdout.split()[-3:]
    return {"compile_s": float(seconds), "gradients": int(tensors), "floats": int(floats)}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny_synthetic")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    before = load()
    rounds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    errors: dict[str, str] = {}
    shape = {}
    for index in range(args.rounds):
        order = VARIANTS if index % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            if variant in errors:
                continue  # it failed once: it fails the same way every time
            result = compile_once(variant, args.config)
            if "error" in result:
                errors[variant] = result["error"]
                continue
            rounds[variant].append(round(result["compile_s"], 3))
            shape = {"gradients": result["gradients"], "floats": result["floats"]}
    median = {v: round(statistics.median(r), 3) for v, r in rounds.items() if r}
    ratio = None
    if "comprehensions_split" in median and "hypermap_slices" in median:
        ratio = round(median["comprehensions_split"] / median["hypermap_slices"], 2)
    print(json.dumps({
        "config": args.config, **shape, "compile_s_median": median, "split_over_hypermap": ratio,
        "failed": errors, "rounds": {v: r for v, r in rounds.items() if r},
        "load_before": before, "load_after": load(),
    }, indent=2))


if __name__ == "__main__":
    main()
