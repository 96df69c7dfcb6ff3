"""Where 2 ranks x 1 thread lose against 1 rank x 2 threads on the same cores (JSON on stdout).

    .venv/bin/python bench/dp_overhead.py [--epochs 3] [--data-root demo/data] [--rounds 1]

The demo preset (tiny_synthetic, global batch 8) on the demo data (deeplab-synth defaults),
every variant for the same steps, evaluation off, one checkpoint at the end. Each variant is
one change from its neighbour, so the difference of their per-step times is the cost of
that one thing:

    one_rank_2_threads          1 rank, 2 threads, batch 8 (the reference)
    two_ranks_old_defaults      2 ranks x 1 thread, 2 data worker processes per rank, loss read
                                back every step, MindSpore's per-tensor gradient all-reduce
                                (the defaults before issue 13)
    two_ranks_1_worker          ... 1 data worker per rank (in-process: a thread, no process)
    two_ranks_1_worker_log10    ... and the loss read back every 10 steps (no per-step host sync)
    two_ranks_fused             ... and one all-reduce of all gradients (fuse_allreduce, the default)
    two_ranks_unbound           ... without core binding (--no-bind-cores)
    two_solo_ranks_side_by_side two independent 1-rank processes (batch 4, 1 thread, each bound
                                to its core): everything of the 2-rank job but the all-reduce
    one_solo_rank_alone         one such process alone on one core: no neighbour at all

Causes (per-step ms; positive = that thing costs):
    data_worker_processes = old_defaults - 1_worker
    per_step_host_sync    = 1_worker - 1_worker_log10
    all_reduce_fusion     = 1_worker_log10 - fused   (what one fused all-reduce saves)
    core_binding          = unbound - fused   (what binding saves)
    all_reduce_and_sync   = fused - solo_side_by_side   (the remaining fused all-reduce + waiting
                            for the slower rank)
    neighbour_contention  = solo_side_by_side - solo_alone   (shared caches/memory bandwidth)
    two_thread_efficiency = solo_alone / one_rank_2_threads  (1.0: 2 threads do 8 images in the
                            time 1 thread does 4)

Each cause is given twice: in wall ms per step (causes_wall_ms_per_step: what throughput
sees, including waiting) and in CPU ms per step of all the job's processes
(causes_cpu_ms_per_step, with cpu_ms_per_image: steadier when other work shares the
machine, blind to waiting). The load average is printed before and after every variant: on
a loaded machine every wall figure is inflated and noisy; rerun on a quiet one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _train_job import (REPO, EpochCpuSampler, JobResult, JobSpec, ensure_demo_data, load,  # noqa: E402
                        parse_training_log, ratio, run_job, sets, train_args)

STEPS_PER_EPOCH = 37  # 300 images / global batch 8
QUIET = sets("eval_every_epochs=0", "save_checkpoint_steps=100000", "compile_cache=false")


def solo_ranks(name: str, cores: list[int], data_root: Path, steps: int, work: Path) -> JobResult:
    """Independent single-process trainings, one per core, started together (no all-reduce)."""
    args = [*train_args(data_root), "--train-steps", str(steps), *QUIET, *sets("batch_size=4", "threads=1",
                                                                                "num_parallel_workers=1",
                                                                                "log_every_steps=10")]
    # The same marker variable launch-train sets, so the CPU sampler finds these processes too.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LAUNCH_TRAIN_JOB_DIR": str(work)}
    before = load()
    t0 = time.monotonic()
    procs = []
    work.mkdir(parents=True)
    with EpochCpuSampler(work / f"{name}-core{cores[0]}" / "log.txt", str(work)) as sampler:
        for core in cores:
            out = work / f"{name}-core{core}"
            out.mkdir()
            with open(out / "log.txt", "w") as log:
                procs.append((out, subprocess.Popen(
                    ["taskset", "-c", str(core), sys.executable, "-m", "deeplab.train", *args, "--ckpt-dir",
                     str(out / "ckpt")], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)))
        codes = [proc.wait() for _, proc in procs]
    result = JobResult(name, max(codes), time.monotonic() - t0, before, load(), job_dir=str(work))
    result.cpu_ms_per_step, _ = sampler.per_step_ms()
    logs = [parse_training_log((out / "log.txt").read_text()) for out, _ in procs]
    result.per_rank_step_ms = [log.mean_step_time_ms for log in logs]
    known = [v for v in result.per_rank_step_ms if v is not None]
    result.step_ms = max(known) if len(known) == len(cores) else None
    result.global_batch = 4 * len(cores)  # images per step summed over the processes
    result.steps = max(log.steps for log in logs)
    return result


def median(values: list[Optional[float]]) -> Optional[float]:
    known = sorted(v for v in values if v is not None)
    return known[len(known) // 2] if known else None


def diff(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a - b, 2) if a is not None and b is not None else None


def run(args: argparse.Namespace) -> dict:
    data_root = Path(args.data_root).resolve()
    ensure_demo_data(data_root)
    steps = args.epochs * STEPS_PER_EPOCH
    base = (*train_args(data_root), "--train-steps", str(steps), *QUIET)
    specs = {
        "one_rank_2_threads": JobSpec("one_rank_2_threads", 1, (*base, *sets("log_every_steps=10"))),
        "two_ranks_old_defaults": JobSpec("two_ranks_old_defaults", 2, (*base, *sets(
            "num_parallel_workers=2", "log_every_steps=1", "fuse_allreduce=false"))),
        "two_ranks_1_worker": JobSpec("two_ranks_1_worker", 2, (*base, *sets(
            "num_parallel_workers=1", "log_every_steps=1", "fuse_allreduce=false"))),
        "two_ranks_1_worker_log10": JobSpec("two_ranks_1_worker_log10", 2, (*base, *sets(
            "num_parallel_workers=1", "log_every_steps=10", "fuse_allreduce=false"))),
        "two_ranks_fused": JobSpec("two_ranks_fused", 2, (*base, *sets(
            "num_parallel_workers=1", "log_every_steps=10", "fuse_allreduce=true"))),
        "two_ranks_unbound": JobSpec("two_ranks_unbound", 2, (*base, *sets(
            "num_parallel_workers=1", "log_every_steps=10", "fuse_allreduce=true")), launch_args=("--no-bind-cores",)),
    }
    cores = sorted(os.sched_getaffinity(0))[:2]
    report: dict = {"epochs": args.epochs, "steps": steps, "rounds": args.rounds, "cores": len(os.sched_getaffinity(0)),
                    "load_start": load(), "variants": {}}
    results: dict[str, list[JobResult]] = {}
    with tempfile.TemporaryDirectory(prefix="dp-overhead-") as tmp:
        work = Path(tmp)
        for round_index in range(args.rounds):
            for name, spec in specs.items():
                results.setdefault(name, []).append(run_job(spec, work / f"{name}-{round_index}"))
            for name, cores_used in (("two_solo_ranks_side_by_side", cores), ("one_solo_rank_alone", cores[:1])):
                results.setdefault(name, []).append(solo_ranks(name, cores_used, data_root, steps,
                                                               work / f"{name}-{round_index}"))
    step: dict[str, Optional[float]] = {}
    cpu: dict[str, Optional[float]] = {}
    for name, runs in results.items():
        docs = [r.to_json() for r in runs]
        for doc in docs:
            doc.pop("job_dir", None)
        step[name] = median([r.step_ms for r in runs])
        cpu[name] = median([r.cpu_ms_per_step for r in runs])
        report["variants"][name] = {"median_step_ms": step[name], "median_cpu_ms_per_step": cpu[name], "runs": docs}
    # The same differences in CPU time (all processes of the job): steadier under other load,
    # blind to waiting.
    report["causes_cpu_ms_per_step"] = {
        "data_worker_processes": diff(cpu["two_ranks_old_defaults"], cpu["two_ranks_1_worker"]),
        "per_step_host_sync": diff(cpu["two_ranks_1_worker"], cpu["two_ranks_1_worker_log10"]),
        "all_reduce_fusion_saves": diff(cpu["two_ranks_1_worker_log10"], cpu["two_ranks_fused"]),
        "core_binding_saves": diff(cpu["two_ranks_unbound"], cpu["two_ranks_fused"]),
        "all_reduce_and_scheduler": diff(cpu["two_ranks_fused"], cpu["two_solo_ranks_side_by_side"]),
        "neighbour_contention_per_rank": diff(cpu["two_solo_ranks_side_by_side"], 2 * cpu["one_solo_rank_alone"])
        if cpu["one_solo_rank_alone"] is not None else None,
    }
    report["cpu_ms_per_image"] = {name: None if value is None else round(value / 8 if name != "one_solo_rank_alone"
                                                                          else value / 4, 2)
                                  for name, value in cpu.items()}
    report["causes_wall_ms_per_step"] = {
        "data_worker_processes": diff(step["two_ranks_old_defaults"], step["two_ranks_1_worker"]),
        "per_step_host_sync": diff(step["two_ranks_1_worker"], step["two_ranks_1_worker_log10"]),
        "all_reduce_fusion_saves": diff(step["two_ranks_1_worker_log10"], step["two_ranks_fused"]),
        "core_binding_saves": diff(step["two_ranks_unbound"], step["two_ranks_fused"]),
        "all_reduce_and_sync": diff(step["two_ranks_fused"], step["two_solo_ranks_side_by_side"]),
        "neighbour_contention": diff(step["two_solo_ranks_side_by_side"], step["one_solo_rank_alone"]),
    }
    report["two_thread_efficiency"] = ratio(step["one_solo_rank_alone"], step["one_rank_2_threads"])
    # Same global batch (8) per step on both: the images/s ratio is the inverse step-time ratio.
    report["ratio_2ranks_over_1rank_images_per_s"] = {
        "old_defaults": ratio(step["one_rank_2_threads"], step["two_ranks_old_defaults"]),
        "new_defaults": ratio(step["one_rank_2_threads"], step["two_ranks_fused"]),
    }
    report["load_end"] = load()
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of 37 steps per variant (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="run every variant N times; medians reported")
    parser.add_argument("--data-root", default=str(REPO / "demo" / "data"))
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1:
        print("dp_overhead: --epochs must be >= 2 (the first epoch compiles) and --rounds >= 1", file=sys.stderr)
        return 2
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
