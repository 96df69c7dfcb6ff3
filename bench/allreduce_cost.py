"""The gradient all-reduce alone, 2 CPU ranks over loopback: per tensor vs one flat buffer (JSON).

    .venv/bin/python bench/allreduce_cost.py [--config tiny_synthetic] [--iters 30]

launch-train starts 2 ranks (1 thread each, cores bound) running bench/_allreduce_payload.py,
which builds the config's model only for its trainable parameters' shapes and times, per
step's worth of gradients (ones, same shapes):

    per_tensor_unfused_ms      one AllReduce per tensor, fusion id 0 (never merged)
    per_tensor_fusion_attr_ms  one AllReduce per tensor, all fusion id 1 (what MindSpore's
                               DistributedGradReducer emits, counting on a backend fusion pass)
    one_flat_tensor_ms         one AllReduce of the same floats as one tensor (what
                               deeplab/grad_fusion.py does, plus its concat and slices)

Load averages before/after are printed beside; about 30 s for tiny_synthetic, 2-3 min for
voc_r101_os16 (232 MB per step).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_job import BIN, REPO, load  # noqa: E402

PAYLOAD = Path(__file__).resolve().parent / "_allreduce_payload.py"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny_synthetic")
    parser.add_argument("--iters", type=int, default=30)
    args = parser.parse_args(argv)
    if args.iters < 1:
        print("allreduce_cost: --iters must be >= 1", file=sys.stderr)
        return 2
    before = load()
    with tempfile.TemporaryDirectory(prefix="allreduce-") as tmp:
        job = Path(tmp) / "job"
        proc = subprocess.run([str(BIN / "launch-train"), "--platform", "CPU", "--devices", "2", "--job-dir", str(job),
                               "--tee", "none", "--status-interval", "3600", "--entry", str(PAYLOAD),
                               "--env", f"BENCH_CONFIG={args.config}", "--env", f"BENCH_ITERS={args.iters}"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        log = (job / "LOG0" / "log.txt").read_text(errors="replace") if (job / "LOG0" / "log.txt").exists() else ""
    lines = [line for line in log.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(f"allreduce_cost: the job failed (exit {proc.returncode}): {proc.stdout.strip().splitlines()[-1:]}",
              file=sys.stderr)
        return 1
    result = json.loads(lines[-1])
    result.update({"config": args.config, "iters": args.iters, "ranks": 2, "threads_per_rank": 1,
                   "load_before": before, "load_after": load()})
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
