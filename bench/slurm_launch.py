"""Slurm launch cost on the real two-node test cluster: launch-train --launcher slurm vs a bare srun; JSON.

Run as root (it starts munged, slurmctld and two slurmd):  .venv/bin/python bench/slurm_launch.py

One run each, inside the same kind of allocation (salloc -N2 --ntasks-per-node=4), of the
same trivial payload (bench/_bench_payload.py: prints "first-line <wall time>" at once):

  bare_srun_s             srun --nodes=2 --ntasks-per-node=4 python payload
  launch_train_dynamic_s  launch-train --launcher slurm --platform CPU (dynamic mode: node probe,
                          plan, render, job.json, the scheduler step, and the ranks step once the
                          scheduler listens, i.e. after its MindSpore import, as in a local launch)
  launch_train_rank_table_s  launch-train --launcher slurm --platform Ascend --mode rank-table
                          (probe reads each node's hccn.conf, one rank table; no scheduler)

Each figure is the time from the command's start (inside the allocation) until every one
of the 8 ranks has printed its first line, with the 1-minute load average taken just
before it. Ratios are against bare srun; the issue's target is at most 1.5x. The rank-table
figure is the like-for-like one (no scheduler); the dynamic one adds MindSpore's start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.slurm import slurm_missing_reason, start_slurm_cluster, stop_slurm_cluster  # noqa: E402

PAYLOAD = REPO / "bench" / "_bench_payload.py"
NODES, PER_NODE = 2, 4


def inner(kind: str, out: Path) -> int:
    """Inside the allocation: note the start time, run the command, wait for it."""
    (out / "t0").write_text(repr(time.time()))
    env = dict(os.environ, BENCH_SLEEP="1")
    if kind == "srun":
        (out / "srun").mkdir()
        argv = ["srun", f"--nodes={NODES}", f"--ntasks-per-node={PER_NODE}", f"--ntasks={NODES * PER_NODE}",
                f"--output={out}/srun/out-%t.txt", sys.executable, str(PAYLOAD)]
    else:
        argv = [sys.executable, "-m", "launcher.cli", "--launcher", "slurm", "--devices", str(PER_NODE),
                "--entry", str(PAYLOAD), "--job-dir", str(out / "job"), "--tee", "none",
                "--status-interval", "1000", "--env", "BENCH_SLEEP=1"]
        if kind == "rank-table":
            argv += ["--platform", "Ascend", "--mode", "rank-table", "--no-topology-check",
                     "--hccn-conf", str(out.parent / "{host}.conf")]
        else:
            argv += ["--platform", "CPU"]
    return subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL).returncode


def first_lines(out: Path, kind: str) -> list[float]:
    files = sorted((out / "srun").glob("out-*.txt")) if kind == "srun" else sorted((out / "job").glob("LOG*/log.txt"))
    times = []
    for path in files:
        for line in path.read_text().splitlines():
            if line.startswith("first-line "):
                times.append(float(line.split()[1]))
                break
    return times


def measure(cluster, work: Path, kind: str) -> dict:
    out = work / kind
    out.mkdir()
    load = os.getloadavg()[0]
    done = cluster.run("salloc", f"-N{NODES}", f"--ntasks-per-node={PER_NODE}", sys.executable, __file__,
                       "--inner", kind, str(out), timeout=300, check=False, cwd=str(REPO))
    if done.returncode != 0:
        raise RuntimeError(f"{kind}: exit {done.returncode}: {done.stderr[-2000:]}")
    times = first_lines(out, kind)
    if len(times) != NODES * PER_NODE:
        raise RuntimeError(f"{kind}: {len(times)} of {NODES * PER_NODE} ranks printed their first line")
    t0 = float((out / "t0").read_text())
    return {"seconds": round(max(times) - t0, 3), "load_avg_1m_before": round(load, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--inner", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        return inner(args.inner[0], Path(args.inner[1]))
    reason = slurm_missing_reason()
    if reason:
        print(json.dumps({"bench": "slurm_launch", "skipped": reason}))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    (work / "cluster").mkdir()
    cluster = start_slurm_cluster(work / "cluster")
    try:
        for index, node in enumerate(cluster.node_names):
            (work / f"{node}.conf").write_text("".join(f"address_{d}=192.168.{index}.{10 + d}\n" for d in range(8)))
        runs = {kind: measure(cluster, work, kind) for kind in ("srun", "dynamic", "rank-table")}
    finally:
        leftovers = stop_slurm_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)
    bare = runs["srun"]["seconds"]
    result = {
        "bench": "slurm_launch", "nodes": NODES, "ranks_per_node": PER_NODE, "ranks": NODES * PER_NODE,
        "runs_each": 1, "cpu_count": os.cpu_count(), "metric": "command start -> every rank printed its first line",
        "bare_srun_s": runs["srun"],
        "launch_train_dynamic_s": {**runs["dynamic"], "ratio_to_bare_srun": round(runs["dynamic"]["seconds"] / bare, 2)},
        "launch_train_rank_table_s": {**runs["rank-table"],
                                      "ratio_to_bare_srun": round(runs["rank-table"]["seconds"] / bare, 2)},
        "target_ratio": 1.5,
        "leftovers": leftovers,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
