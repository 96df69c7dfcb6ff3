"""Data-parallel scaling on this host: 1 rank x 2 threads vs 2 ranks x 1 thread (JSON on stdout).

    .venv/bin/python bench/scaling.py [--epochs 40] [--data-root demo/data] [--config tiny_synthetic]

Both sides run through launch-train (CPU, dynamic start, cores bound: 1 rank on both cores,
or each of 2 ranks on its own core) with the same preset, data (the demo's deeplab-synth set,
written when missing) and epochs, one after the other. Per side:

    train_images_per_s   global batch x 1000 / per-step time (epochs after the first, the
                         slowest rank); evaluation and start-up are not in it
    wall_s               launch-train start to exit: start-up, compile, evaluations included
    miou_curve           rank 0's evaluation during training (single scale), (step, mIoU)
    final_val_miou       deeplab-eval of the final checkpoint with the preset's scales and
                         flip (what `make demo` reports)
    cpu_ms_per_step      CPU time of all the side's processes per step after the first epoch
                         (rank 0's evaluations included), steadier than wall time under load
    load_before/after    os.getloadavg() just before and after the side

and the ratios 2 ranks / 1 rank. Targets (issue 13): images/s ratio >= 0.9, |mIoU difference|
<= 0.02. The load average is printed beside every figure: with other work on the machine the
figures are inflated and noisy (load > cores: flagged in "loaded").
Default run: the preset's 40 epochs, about 2 x 3 minutes on 2 idle cores.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_job import BIN, REPO, JobSpec, ensure_demo_data, load, ratio, run_job, sets, train_args  # noqa: E402


def final_eval(config: str, data_root: Path, job_dir: Path) -> Optional[float]:
    ckpts = sorted((job_dir / "LOG0" / "ckpt").glob("deeplab-step*.ckpt"))
    if not ckpts:
        return None
    out = job_dir / "eval.json"
    subprocess.run([str(BIN / "deeplab-eval"), "--config", config, "--data-root", str(data_root), "--ckpt",
                    str(ckpts[-1]), "--output", str(out)], check=True, cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "2"})
    return json.loads(out.read_text())["mIoU"]


def run(args: argparse.Namespace) -> dict:
    data_root = Path(args.data_root).resolve()
    ensure_demo_data(data_root)
    cores = len(os.sched_getaffinity(0))
    extra = sets(f"epoch_size={args.epochs}") if args.epochs else ()
    base = (*train_args(data_root, config=args.config), *extra, *sets(*args.overrides))
    sides = {"one_rank_2_threads": JobSpec("one_rank_2_threads", 1, base),
             "two_ranks_1_thread": JobSpec("two_ranks_1_thread", 2, base)}
    report: dict = {"config": args.config, "epochs": args.epochs or "preset", "overrides": args.overrides,
                    "cores": cores, "sides": {}}
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        for name, spec in sides.items():
            job_dir = Path(tmp) / name
            result = run_job(spec, job_dir)
            doc = result.to_json()
            doc.pop("job_dir")
            doc["final_val_miou"] = final_eval(args.config, data_root, job_dir) if result.exit_code == 0 else None
            doc["load_after_eval"] = load()
            doc["loaded"] = max(doc["load_before"]["1m"], doc["load_after"]["1m"]) > cores
            report["sides"][name] = doc
    one, two = report["sides"]["one_rank_2_threads"], report["sides"]["two_ranks_1_thread"]
    report["ratio_2ranks_over_1rank"] = {
        "train_images_per_s": ratio(two["train_images_per_s"], one["train_images_per_s"]),
        "wall_s": ratio(two["wall_s"], one["wall_s"]),
    }
    if one["final_val_miou"] is not None and two["final_val_miou"] is not None:
        report["miou_difference_2ranks_minus_1rank"] = round(two["final_val_miou"] - one["final_val_miou"], 4)
    report["targets"] = {"images_per_s_ratio_min": 0.9, "miou_abs_difference_max": 0.02}
    report["met"] = {
        "images_per_s": (report["ratio_2ranks_over_1rank"]["train_images_per_s"] or 0) >= 0.9,
        "miou": abs(report.get("miou_difference_2ranks_minus_1rank", 1.0)) <= 0.02,
    }
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny_synthetic")
    parser.add_argument("--epochs", type=int, default=0, help="epochs per side (default: the preset's)")
    parser.add_argument("--data-root", default=str(REPO / "demo" / "data"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for both sides")
    args = parser.parse_args(argv)
    if args.epochs < 0:
        print("scaling: --epochs must be >= 0", file=sys.stderr)
        return 2
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
