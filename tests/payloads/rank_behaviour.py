"""A test rank: records what it was given, prints progress lines, then behaves as asked.

    python rank_behaviour.py [--steps N] [--step-time S] [--sleep S] [--fail-rank R --exit-code C]
                             [--kill-rank R --signal NAME] [--spawn-orphan] [--ignore-term]
                             [--fail-attempts N] [--save-on-usr1 [--save-time S]] [extra args...]

record.json (in the working directory): argv, cwd, environment, pid, CPU affinity.
The rank number comes from RANK_ID, else OMPI_COMM_WORLD_RANK; the attempt from
LAUNCH_TRAIN_RESTART_COUNT (--fail-attempts N: --fail-rank fails only in attempts 0..N-1).
--save-on-usr1: SIGUSR1 ("save and stop") ends the step loop after the current step: the rank
takes --save-time seconds "saving", writes the step to saved_step.txt (its "checkpoint"), prints
"saved and stopped at step N" and exits 0; a later attempt (LAUNCH_TRAIN_RESTART_COUNT > 0)
that finds saved_step.txt continues after that step ("resumed after step N").
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time


def rank_number() -> int:
    for name in ("RANK_ID", "OMPI_COMM_WORLD_RANK"):
        if name in os.environ:
            return int(os.environ[name])
    return -1


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--step-time", type=float, default=0.0)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--fail-rank", type=int, default=None)
    parser.add_argument("--exit-code", type=int, default=1)
    parser.add_argument("--kill-rank", type=int, default=None)
    parser.add_argument("--signal", default="SIGKILL")
    parser.add_argument("--spawn-orphan", action="store_true", help="leave a setsid'd grandchild running")
    parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (needs SIGKILL)")
    parser.add_argument("--fail-attempts", type=int, default=None, help="--fail-rank fails only in the first N attempts")
    parser.add_argument("--save-on-usr1", action="store_true", help="SIGUSR1: save (--save-time s) and stop")
    parser.add_argument("--save-time", type=float, default=0.0)
    args, extra = parser.parse_known_args()
    asked_to_save: list[int] = []
    if args.save_on_usr1:
        signal.signal(signal.SIGUSR1, lambda signum, frame: asked_to_save.append(signum))
    rank = rank_number()
    attempt = int(os.environ.get("LAUNCH_TRAIN_RESTART_COUNT", "0"))
    if args.fail_attempts is not None and attempt >= args.fail_attempts:
        args.fail_rank = None
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # before record.json: tests signal once it exists
    record = {
        "argv": sys.argv[1:],
        "extra": extra,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "pid": os.getpid(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "rank": rank,
    }
    with open("record.json.tmp", "w") as handle:
        json.dump(record, handle)
    os.replace("record.json.tmp", "record.json")
    print(f"rank {rank} started pid {os.getpid()} attempt {attempt}", flush=True)
    if args.spawn_orphan:
        subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(300)"])
    first = 1
    if args.save_on_usr1 and attempt > 0 and os.path.exists("saved_step.txt"):
        with open("saved_step.txt") as handle:
            first = int(handle.read()) + 1
        print(f"rank {rank} resumed after step {first - 1}", flush=True)
    for step in range(first, args.steps + 1):
        time.sleep(args.step_time)
        print(f"epoch: 1 step: {step}, loss is {1.0 / step:.5f}", flush=True)
        if asked_to_save:
            time.sleep(args.save_time)
            with open("saved_step.txt", "w") as handle:
                handle.write(str(step))
            print(f"rank {rank}: saved and stopped at step {step}", flush=True)
            return 0
    if args.fail_rank == rank:
        time.sleep(args.sleep)
        print(f"rank {rank} failing with exit code {args.exit_code}", flush=True)
        return args.exit_code
    if args.kill_rank == rank:
        time.sleep(args.sleep)
        print(f"rank {rank} killing itself with {args.signal}", flush=True)
        os.kill(os.getpid(), getattr(signal, args.signal))
        time.sleep(10)
    if args.fail_rank is not None or args.kill_rank is not None:
        time.sleep(300)  # the others wait to be stopped by the launcher
    else:
        time.sleep(args.sleep)
    print(f"rank {rank} done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
