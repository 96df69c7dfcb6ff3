"""Payload for bench/launch_overhead.py and bench/failure_latency.py (no MindSpore import).

Prints ``first-line <wall time>`` at once. Then: the rank named by BENCH_FAIL_RANK writes
its wall-clock death time to $BENCH_OUT/death.txt after BENCH_FAIL_AFTER seconds and
exits 1; every other process sleeps BENCH_SLEEP seconds. The rank is RANK_ID (launch-train)
or MS_NODE_ID (msrun); msrun's scheduler process (MS_ROLE=MS_SCHED) runs this too.
"""
import os
import sys
import time

print(f"first-line {time.time():.6f}", flush=True)
role = os.environ.get("MS_ROLE", "")
rank = os.environ.get("RANK_ID") or os.environ.get("MS_NODE_ID") or "-1"
fail_rank = os.environ.get("BENCH_FAIL_RANK")
if role != "MS_SCHED" and fail_rank is not None and rank == fail_rank:
    time.sleep(float(os.environ.get("BENCH_FAIL_AFTER", "2")))
    path = os.path.join(os.environ["BENCH_OUT"], "death.txt")
    with open(path + ".tmp", "w") as handle:
        handle.write(f"{time.time():.6f}\n")
    os.replace(path + ".tmp", path)
    os._exit(1)
time.sleep(float(os.environ.get("BENCH_SLEEP", "1")))
sys.exit(0)
