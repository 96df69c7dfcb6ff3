"""Time to the first training step: fresh start vs restart with the compile cache vs without (JSON).

    .venv/bin/python bench/restart_compile.py [--config voc_r101_os16] [--crop 129] [--rounds 2]
                                              [--data-root demo/data]

One deeplab-train process (1 rank, 2 threads) per measurement, on the demo data:

    fresh            a 2-step run in a new checkpoint dir: compiles the graph, fills the compile
                     cache (<ckpt dir>/compile_cache/<key>/), saves checkpoints at steps 1 and 2
    restart_cached   --resume of that run from step 1 (its step-2 checkpoint removed), what a
                     launch-train restart does: the graph comes from the cache
    restart_compile  the same --resume with compile_cache=false: compiles again

Each is timed from spawning the process to its first ``epoch: E step: S, loss is L`` line
(seconds), with the time to the "resumed from" line (start-up + checkpoint load) beside it.
Rounds alternate the three; medians are reported with the load average before/after each
measurement (a loaded machine inflates every figure). The saving is restart_compile -
restart_cached. Default run (R101-OS16 at crop 129, 2 rounds) about 3-5 minutes idle.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_job import REPO, ensure_demo_data, load  # noqa: E402


def first_step(command: list[str], env: dict[str, str]) -> dict:
    """Seconds from spawn to the first loss line (and to the "resumed" line); the process is then stopped."""
    before = load()
    t0 = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    marks: dict[str, float] = {}
    try:
        for line in proc.stdout:
            now = time.monotonic() - t0
            if line.startswith("resumed from"):
                marks["resumed_s"] = round(now, 2)
            if line.startswith("compile cache"):
                marks["cache"] = line.split(": ", 1)[-1].strip()
            if line.startswith("epoch: "):
                marks["first_step_s"] = round(now, 2)
                break
        proc.stdout.read()
        proc.wait(timeout=600)  # 2 steps: it ends by itself after the last checkpoint
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    if "first_step_s" not in marks:
        raise RuntimeError(f"no step line from {' '.join(command)} (exit {proc.returncode})")
    return {**marks, "load_before": before, "load_after": load()}


def run(args: argparse.Namespace) -> dict:
    data_root = Path(args.data_root).resolve()
    ensure_demo_data(data_root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "RANK_", "LAUNCH_TRAIN_"))}
    env["OMP_NUM_THREADS"] = str(args.threads)
    base = [sys.executable, "-m", "deeplab.train", "--config", args.config, "--data-root", str(data_root),
            "--train-steps", "2", "--set", f"crop_size={args.crop}", "--set", "batch_size=2", "--set", "train_split=train",
            "--set", "eval_every_epochs=0", "--set", "save_checkpoint_steps=1", "--set", f"threads={args.threads}",
            "--set", "epoch_size=1", "--set", "save_checkpoint_num=2"]
    measured: dict[str, list[dict]] = {"fresh": [], "restart_cached": [], "restart_compile": []}
    with tempfile.TemporaryDirectory(prefix="restart-compile-") as tmp:
        for index in range(args.rounds):
            ckpt = Path(tmp) / f"round{index}"
            measured["fresh"].append(first_step([*base, "--ckpt-dir", str(ckpt)], env))
            for name, extra in (("restart_cached", []), ("restart_compile", ["--set", "compile_cache=false"])):
                (ckpt / "deeplab-step000002.ckpt").unlink()  # the restart continues from step 1
                measured[name].append(first_step([*base, "--ckpt-dir", str(ckpt), "--resume", *extra], env))
            shutil.rmtree(ckpt, ignore_errors=True)
    medians = {name: statistics.median(r["first_step_s"] for r in runs) for name, runs in measured.items()}
    return {
        "config": args.config, "crop": args.crop, "threads": args.threads, "rounds": args.rounds,
        "time_to_first_step_s_median": medians,
        "compile_saved_by_cache_s": round(medians["restart_compile"] - medians["restart_cached"], 2),
        "restart_cached_over_fresh": round(medians["restart_cached"] / medians["fresh"], 3),
        "runs": measured,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="voc_r101_os16")
    parser.add_argument("--crop", type=int, default=129)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data-root", default=str(REPO / "demo" / "data"))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.crop < 33 or args.threads < 1:
        print("restart_compile: --rounds >= 1, --crop >= 33, --threads >= 1", file=sys.stderr)
        return 2
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
