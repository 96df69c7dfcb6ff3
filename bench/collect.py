"""Benchmark collect-results: hard links + hashing on one file system, copies across
file systems, and SFTP from a real sshd test host. Prints one JSON document.

    .venv/bin/python bench/collect.py [--ranks 8] [--gib-per-rank 1] [--copy-mib-per-rank 128]
                                      [--dir DIR] [--no-sftp]

Same file system: ranks x GiB of checkpoints (one job, rank 0's LOG dir, hard-linked).
The link step is what moves the data; sha256 of every checkpoint then has to read it
all (the price of a verifiable manifest). Both are reported separately, for a cold
hash cache and for a second collection of the same files (cache keyed by device,
inode, size, mtime: hard links share the inode, so nothing is re-read).

Across file systems (/dev/shm, when it is a different one) and over SFTP the bytes
are copied (and hashed while they stream); a smaller size per rank keeps RAM/disk
use modest. Everything it creates is removed at the end, also on failure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from launcher.collect import CollectRequest, collect  # noqa: E402
from tests.fixtures.collect_jobs import RankSpec, make_job  # noqa: E402

MIB = 1 << 20


def write_checkpoint(path: Path, size: int, seed: int) -> None:
    """Incompressible-looking data without paying os.urandom for every byte."""
    block = bytearray(os.urandom(16 * MIB))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        written, index = 0, 0
        while written < size:
            block[:16] = f"{seed:08d}{index:08d}".encode()
            chunk = block[: min(len(block), size - written)]
            out.write(chunk)
            written += len(chunk)
            index += 1
    os.utime(path, (1_700_000_000 + seed, 1_700_000_000 + seed))


def build_job(root: Path, ranks: int, bytes_per_rank: int, hosts=None, rank_host=None, host_dirs=None) -> Path:
    specs = [RankSpec(r, host=(rank_host or (lambda _r: "localhost"))(r), losses=[1.0, 0.5]) for r in range(ranks)]
    job_dir = make_job(root, specs, hosts=hosts, host_dirs=host_dirs)
    for r, spec in enumerate(specs):
        base = (host_dirs or {}).get(spec.host, job_dir)
        write_checkpoint(base / f"LOG{r}" / "ckpt" / f"deeplab-{r}.ckpt", bytes_per_rank, r)
    return job_dir


def timed_collect(request: CollectRequest) -> dict:
    started = time.perf_counter()
    outcome = collect(request)
    wall = time.perf_counter() - started
    facts = outcome.summary["collection"]
    if outcome.problems:
        raise RuntimeError(f"collection had problems: {[p.message for p in outcome.problems]}")
    return {
        "wall_s": round(wall, 3),
        "transfer_s": facts["transfer_s"],
        "hash_s": facts["hash_s"],
        "bytes": facts["bytes"],
        "linked": facts["linked"], "copied": facts["copied"], "sftp": facts["sftp"],
        "hashes_from_cache": facts["hashes_from_cache"],
        "transfer_MBps": round(facts["bytes"] / MIB / facts["transfer_s"], 1) if facts["transfer_s"] else None,
        "hash_MBps": round(facts["hashed_bytes_after_link"] / MIB / facts["hash_s"], 1)
        if facts["hash_s"] and facts["hashed_bytes_after_link"] else None,
        "report_and_summary_s": round(wall - facts["transfer_s"] - facts["hash_s"], 3),
    }


def bench_same_fs(work: Path, ranks: int, bytes_per_rank: int) -> dict:
    t0 = time.perf_counter()
    job_dir = build_job(work / "jobs", ranks, bytes_per_rank)
    setup_s = time.perf_counter() - t0
    cache = work / "sha256-cache.json"
    cold = timed_collect(CollectRequest(job_dir=job_dir, into=work / "results" / "cold", hash_cache=cache))
    warm = timed_collect(CollectRequest(job_dir=job_dir, into=work / "results" / "warm", hash_cache=cache))
    no_hash_links = timed_collect(CollectRequest(job_dir=job_dir, into=work / "results" / "nockpt", hash_cache=None,
                                                 include_checkpoints=False))
    shutil.rmtree(job_dir.parent)
    shutil.rmtree(work / "results")
    return {"ranks": ranks, "bytes_per_rank": bytes_per_rank, "write_checkpoints_s": round(setup_s, 2),
            "cold_hash_cache": cold, "warm_hash_cache": warm, "without_checkpoints": no_hash_links}


def bench_cross_fs(work: Path, target_root: Path, ranks: int, bytes_per_rank: int) -> dict:
    if work.stat().st_dev == target_root.stat().st_dev:
        return {"skipped": f"{target_root} is on the same file system as {work}"}
    free = shutil.disk_usage(target_root).free
    if free < 2 * ranks * bytes_per_rank:
        return {"skipped": f"{target_root} has only {free // MIB} MiB free"}
    job_dir = build_job(work / "xjobs", ranks, bytes_per_rank)
    into = Path(tempfile.mkdtemp(prefix="bench-collect-", dir=target_root)) / "results"
    try:
        result = timed_collect(CollectRequest(job_dir=job_dir, into=into, hash_cache=None))
    finally:
        shutil.rmtree(into.parent, ignore_errors=True)
        shutil.rmtree(job_dir.parent, ignore_errors=True)
    return {"target": str(target_root), "ranks": ranks, "bytes_per_rank": bytes_per_rank, **result}


def bench_sftp(work: Path, ranks: int, bytes_per_rank: int) -> dict:
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").exists():
        return {"skipped": "needs root and /usr/sbin/sshd for a test sshd"}
    from launcher.remote.ssh import SshOptions
    from tests.fixtures.sshd import start_sshd_hosts, stop_sshd_hosts

    sshd_dir = Path(tempfile.mkdtemp(prefix="bench-sshd-"))
    cluster = start_sshd_hosts(sshd_dir, addresses=("127.0.0.2",))
    try:
        host = cluster.hosts[0]
        name = host.spec(cluster.user)
        remote_dir = work / "remote-host" / "job"
        hosts = [{"name": "localhost", "address": "127.0.0.1", "user": None, "port": 22, "local": True, "slots": 1},
                 {"name": name, "address": host.address, "user": cluster.user, "port": host.port, "local": False,
                  "slots": ranks, "job_dir": str(remote_dir)}]
        job_dir = build_job(work / "sjobs", ranks, bytes_per_rank, hosts=hosts, rank_host=lambda _r: name,
                            host_dirs={name: remote_dir})
        options = SshOptions(key_file=cluster.client_key, known_hosts=cluster.known_hosts, timeout_s=10)
        result = timed_collect(CollectRequest(job_dir=job_dir, into=work / "sresults", ssh=options, hash_cache=None))
    finally:
        survivors = stop_sshd_hosts(cluster)
        shutil.rmtree(sshd_dir, ignore_errors=True)
    if survivors:
        raise RuntimeError(f"sshd processes left: {survivors}")
    return {"host": f"{host.address}:{host.port} (loopback sshd, same machine)", "ranks": ranks,
            "bytes_per_rank": bytes_per_rank, **result}


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--gib-per-rank", type=float, default=1.0)
    parser.add_argument("--copy-mib-per-rank", type=int, default=128)
    parser.add_argument("--dir", type=Path, default=REPO, help="where to create the work dir (its file system is measured)")
    parser.add_argument("--copy-target", type=Path, default=Path("/dev/shm"))
    parser.add_argument("--no-sftp", action="store_true")
    args = parser.parse_args()
    bytes_per_rank = int(args.gib_per_rank * 1024 * MIB)
    copy_bytes = args.copy_mib_per_rank * MIB
    need = args.ranks * bytes_per_rank + 2 * args.ranks * copy_bytes + 1024 * MIB
    free = shutil.disk_usage(args.dir).free
    if free < need:
        sys.stderr.write(f"bench/collect.py: {args.dir}: needs {need // MIB} MiB free, has {free // MIB} MiB\n")
        return 2
    work = Path(tempfile.mkdtemp(prefix=".bench-collect-", dir=args.dir))
    try:
        report = {
            "benchmark": "collect-results",
            "cpus": os.cpu_count(),
            "work_dir_fs": str(args.dir),
            "same_fs": bench_same_fs(work, args.ranks, bytes_per_rank),
            "cross_fs": bench_cross_fs(work, args.copy_target, args.ranks, copy_bytes),
            "sftp": {"skipped": "--no-sftp"} if args.no_sftp else bench_sftp(work, args.ranks, copy_bytes),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
