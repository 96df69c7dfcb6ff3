"""Multi-host launch timings over two real sshd test hosts (127.0.0.2, 127.0.0.3); prints JSON.

Run as root (it starts sshd):  .venv/bin/python bench/multihost_launch.py [--devices 8] [--repeat 3]

Measures, for a rank-table job of a trivial payload on 2 hosts x N devices:
  preflight_s            pre-flight of both hosts (SSH connect + probe), in the library
  all_ranks_started_s    launch-train invocation -> every rank has written its record file
  succeeded_wall_s       launch-train invocation -> exit 0 (payload exits at once)
  failure_to_exit_s      a rank on the second host exits 3 -> launch-train has stopped all and exited
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.job.hosts import parse_hosts_arg  # noqa: E402
from launcher.remote.preflight import PreflightRequest, run_preflight  # noqa: E402
from launcher.remote.ssh import SshOptions, resolve_hosts  # noqa: E402
from tests.fixtures.sshd import start_sshd_hosts, stop_sshd_hosts  # noqa: E402

PAYLOAD = '''\
import os, sys, time
with open("started", "w") as out:
    out.write(repr(time.time()))
if os.environ.get("FAIL_RANK") == os.environ["RANK_ID"]:
    time.sleep(1.0)
    with open("failed_at", "w") as out:
        out.write(repr(time.time()))
    sys.exit(3)
time.sleep(float(os.environ.get("PAYLOAD_SLEEP", "0")))
'''


def _args(work: Path, config: Path, devices: int, job: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", "--hosts", "root@127.0.0.2,root@127.0.0.3",
            "--ssh-config", str(config), "--platform", "Ascend", "--devices", str(devices),
            "--hccn-conf", str(work / "hccn" / "{host}" / "hccn.conf"), "--entry", str(work / "payload.py"),
            "--tee", "none", "--status-interval", "1000", "--job-dir", str(work / job), *extra]


def _wait_started(job_dir: Path, ranks: int, proc: subprocess.Popen, t0: float) -> float:
    while True:
        if all((job_dir / f"LOG{r}" / "started").exists() for r in range(ranks)):
            return time.monotonic() - t0
        if proc.poll() is not None and not all((job_dir / f"LOG{r}" / "started").exists() for r in range(ranks)):
            raise RuntimeError(f"launch-train exited {proc.returncode} before all ranks started")
        time.sleep(0.01)


def measure(work: Path, config: Path, devices: int, index: int) -> dict:
    ranks = 2 * devices
    options = SshOptions(config_file=config)
    hosts = resolve_hosts(parse_hosts_arg("root@127.0.0.2,root@127.0.0.3"), options)
    t0 = time.monotonic()
    run_preflight(hosts, options, PreflightRequest(job_dir=work / "pf", platform="CPU",
                                                    devices={h.host_name: devices for h in hosts}))
    preflight_s = time.monotonic() - t0

    t0 = time.monotonic()
    proc = subprocess.Popen(_args(work, config, devices, f"ok{index}"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    started_s = _wait_started(work / f"ok{index}", ranks, proc, t0)
    _, err = proc.communicate(timeout=120)
    wall_s = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])

    fail_rank = ranks - 1
    proc = subprocess.Popen(_args(work, config, devices, f"fail{index}", "--env", f"FAIL_RANK={fail_rank}",
                                  "--env", "PAYLOAD_SLEEP=60"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    _, err = proc.communicate(timeout=120)
    exited_at = time.time()
    if proc.returncode != 3:
        raise RuntimeError(f"expected exit 3, got {proc.returncode}: {err[-2000:]}")
    failed_at = float((work / f"fail{index}" / f"LOG{fail_rank}" / "failed_at").read_text())
    return {"preflight_s": preflight_s, "all_ranks_started_s": started_s, "succeeded_wall_s": wall_s,
            "failure_to_exit_s": exited_at - failed_at}


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        print(json.dumps({"skipped": "needs root and /usr/sbin/sshd"}))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-multihost-"))
    (work / "sshd").mkdir()
    cluster = start_sshd_hosts(work / "sshd")
    try:
        config = cluster.write_ssh_config(work / "ssh_config")
        (work / "payload.py").write_text(PAYLOAD)
        for index, host in enumerate(("127.0.0.2", "127.0.0.3")):
            (work / "hccn" / host).mkdir(parents=True)
            (work / "hccn" / host / "hccn.conf").write_text(
                "".join(f"address_{d}=192.168.{index}.{10 + d}\n" for d in range(8)))
        runs = [measure(work, config, args.devices, i) for i in range(args.repeat)]
    finally:
        leftovers = stop_sshd_hosts(cluster)
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "bench": "multihost_launch", "hosts": 2, "devices_per_host": args.devices, "ranks": 2 * args.devices,
        "repeat": args.repeat, "cpu_count": os.cpu_count(),
        **{key: {"median": round(statistics.median(r[key] for r in runs), 3),
                 "min": round(min(r[key] for r in runs), 3), "max": round(max(r[key] for r in runs), 3)}
           for key in runs[0]},
        "leftover_processes": leftovers,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
