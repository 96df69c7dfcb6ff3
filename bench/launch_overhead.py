"""Time from invocation to every rank's first output line: launch-train vs msrun (JSON on stdout).

    python bench/launch_overhead.py [--ranks 8] [--repeats 3]

Both launchers start the same trivial payload (bench/_bench_payload.py prints its wall-clock
time first thing, then sleeps 1 s) as N local ranks on the CPU: launch-train in its default
CPU mode (dynamic: scheduler + workers), msrun with --worker_num N --local_worker_num N
--join True. The measure is max(rank first-line time) - time just before the launcher
process was spawned, per run; runs alternate between the two launchers. Target:
launch-train's median <= 0.5 x msrun's.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "_bench_payload.py"
BIN = Path(sys.executable).parent
FIRST = re.compile(r"first-line (\d+\.\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_lines(paths: list[Path]) -> list[float]:
    times = []
    for path in paths:
        match = FIRST.search(path.read_text(errors="replace")) if path.exists() else None
        if match is None:
            raise RuntimeError(f"no first line in {path}")
        times.append(float(match.group(1)))
    return times


def run_launch_train(ranks: int, work: Path) -> float:
    job_dir = work / "job"
    env = {**os.environ, "BENCH_SLEEP": "1"}
    t0 = time.time()
    subprocess.run([str(BIN / "launch-train"), "--platform", "CPU", "--devices", str(ranks), "--job-dir", str(job_dir),
                    "--entry", str(PAYLOAD), "--tee", "none", "--status-interval", "600"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return max(first_lines([job_dir / f"LOG{r}" / "log.txt" for r in range(ranks)])) - t0


def run_msrun(ranks: int, work: Path) -> float:
    log_dir = work / "msrun"
    env = {**os.environ, "BENCH_SLEEP": "1"}
    t0 = time.time()
    subprocess.run([str(BIN / "msrun"), "--worker_num", str(ranks), "--local_worker_num", str(ranks),
                    "--master_port", str(free_port()), "--log_dir", str(log_dir), "--join", "True", str(PAYLOAD)],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, cwd=work)
    return max(first_lines([log_dir / f"worker_{r}.log" for r in range(ranks)])) - t0


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"launch-train": [], "msrun": []}
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        for i in range(args.repeats):
            for name, run in (("launch-train", run_launch_train), ("msrun", run_msrun)):
                work = Path(tmp) / f"{name}-{i}"
                work.mkdir()
                results[name].append(round(run(args.ranks, work), 4))
    ours, theirs = statistics.median(results["launch-train"]), statistics.median(results["msrun"])
    print(json.dumps({
        "benchmark": "launch_overhead",
        "ranks": args.ranks,
        "cpus": os.cpu_count(),
        "metric": "seconds from invocation to every rank's first output line",
        "launch_train_s": results["launch-train"],
        "msrun_s": results["msrun"],
        "launch_train_median_s": ours,
        "msrun_median_s": theirs,
        "ratio": round(ours / theirs, 3),
        "target_ratio": 0.5,
        "meets_target": ours <= 0.5 * theirs,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
