"""Time from one rank's death to the whole job gone: launch-train vs ``msrun --join True`` (JSON on stdout).

    python bench/failure_latency.py [--ranks 4] [--repeats 3] [--msrun-timeout 180]

Same payload for both (bench/_bench_payload.py): rank 1 writes its wall-clock death time
and exits 1 after 2 s; every other process sleeps 300 s. Every process is tagged with a
unique environment variable; the bench polls the process table (every 5 ms) until no
tagged process remains and the launcher itself has exited. Measure = that moment minus
the death time. msrun runs with a timeout (it waits for its scheduler process, see
FIELD_NOTES); a run that hits it is reported as the timeout and its processes are killed.
Target: launch-train < 1 s and faster than msrun.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
PAYLOAD = HERE / "_bench_payload.py"
BIN = Path(sys.executable).parent
TAG = "BENCH_JOB_TAG"
FAIL_RANK = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tagged(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get(TAG) == tag:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def measure(command: list[str], work: Path, timeout: float) -> dict:
    tag = uuid.uuid4().hex
    env = {**os.environ, TAG: tag, "BENCH_OUT": str(work), "BENCH_FAIL_RANK": str(FAIL_RANK),
           "BENCH_FAIL_AFTER": "2", "BENCH_SLEEP": "300"}
    death_file = work / "death.txt"
    launcher = subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = time.monotonic()
    timed_out = False
    try:
        while not death_file.exists():
            if time.monotonic() - started > 120:
                raise RuntimeError(f"rank {FAIL_RANK} never died: {command}")
            time.sleep(0.005)
        death = float(death_file.read_text())
        while True:
            if launcher.poll() is not None and not [p for p in tagged(tag) if p.pid != launcher.pid]:
                gone = time.time()
                break
            if time.time() - death > timeout:
                timed_out, gone = True, time.time()
                break
            time.sleep(0.005)
    finally:
        for proc in tagged(tag):
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait()
    return {"seconds": round(gone - death, 4), "timed_out": timed_out, "exit_code": launcher.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--msrun-timeout", type=float, default=180.0)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"launch-train": [], "msrun": []}
    with tempfile.TemporaryDirectory(prefix="bench-fail-") as tmp:
        for i in range(args.repeats):
            work = Path(tmp) / f"lt-{i}"
            work.mkdir()
            runs["launch-train"].append(measure(
                [str(BIN / "launch-train"), "--platform", "CPU", "--devices", str(args.ranks), "--job-dir",
                 str(work / "job"), "--entry", str(PAYLOAD), "--tee", "none", "--status-interval", "600"],
                work, timeout=60))
            if runs["msrun"] and runs["msrun"][0]["timed_out"]:
                continue  # one timed-out msrun run says enough; do not spend minutes per repeat
            work = Path(tmp) / f"msrun-{i}"
            work.mkdir()
            runs["msrun"].append(measure(
                [str(BIN / "msrun"), "--worker_num", str(args.ranks), "--local_worker_num", str(args.ranks),
                 "--master_port", str(free_port()), "--log_dir", str(work / "logs"), "--join", "True", str(PAYLOAD)],
                work, timeout=args.msrun_timeout))
    ours = statistics.median(r["seconds"] for r in runs["launch-train"])
    theirs = statistics.median(r["seconds"] for r in runs["msrun"])
    print(json.dumps({
        "benchmark": "failure_latency",
        "ranks": args.ranks,
        "cpus": os.cpu_count(),
        "metric": "seconds from one rank's death to every process of the job gone and the launcher exited",
        "launch_train": runs["launch-train"],
        "msrun": runs["msrun"],
        "launch_train_median_s": ours,
        "msrun_median_s": theirs,
        "msrun_timeout_s": args.msrun_timeout,
        "target_s": 1.0,
        "meets_target": ours < 1.0 and ours < theirs,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
