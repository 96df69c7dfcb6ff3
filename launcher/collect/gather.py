"""Gather a job's files from every host into a staging directory.

Hosts are read in parallel (one thread each: the work is waiting on disks and
sockets). What cannot be gathered -- a host that does not answer, a missing LOG dir,
an unreadable file -- becomes a Problem, and everything else is still gathered.
Files that were hard-linked are hashed afterwards, in parallel and through the hash
cache; copied files were hashed while their bytes went past.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from launcher.collect.hashing import HashCache
from launcher.collect.jobfile import HostEntry, JobRecord
from launcher.collect.sources import HostFiles, SourceFile

# Job-level files the launcher writes next to job.json on the host that launched.
JOB_LEVEL_FILES = ("job.json", "rank_table.json", "hostfile")
SCHEDULER_DIR = "scheduler"
CHECKPOINT_SUFFIX = ".ckpt"


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # relative to the results dir
    source: str  # local path or ssh://user@host:port/path
    method: str  # link | copy | sftp
    size: int
    sha256: str | None


@dataclass(frozen=True)
class Problem:
    kind: str  # unreachable_host | missing_rank_dir | unreadable_file | truncated_log | failed_rank | ...
    message: str
    rank: int | None = None
    host: str | None = None

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "rank": self.rank, "host": self.host}


@dataclass
class HostGather:
    """What one host gave: like fabric's GroupResult entry, succeeded unless `error`."""

    host: str
    uri: str
    entries: list[ManifestEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    ranks_found: list[int] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass
class GatherResult:
    hosts: list[HostGather]
    transfer_s: float
    hash_s: float
    hashed_bytes: int
    hashed_from_cache: int

    @property
    def entries(self) -> list[ManifestEntry]:
        return sorted((e for h in self.hosts for e in h.entries), key=lambda e: e.path)

    @property
    def problems(self) -> list[Problem]:
        return [p for h in self.hosts for p in h.problems]

    @property
    def ranks_found(self) -> set[int]:
        return {r for h in self.hosts for r in h.ranks_found}


@dataclass(frozen=True)
class GatherPlan:
    """Which directories and files to take from one host."""

    host: HostEntry | None  # None: the launch host's job dir (job.json's own directory)
    rank_dirs: tuple[tuple[int, str, str], ...]  # (rank, "LOG<rank>", host name in job.json)
    job_files: bool
    scheduler: bool


def plan_gather(job: JobRecord) -> list[GatherPlan]:
    """Pure: one plan per host with ranks; local hosts read from the job dir given."""
    plans = []
    scheduler_host = job.scheduler_host
    scheduler_is_remote = any(h.name == scheduler_host and not h.local for h in job.hosts)
    for host in job.hosts:
        ranks = tuple((r.rank, r.log_dir, r.host) for r in job.ranks if r.host == host.name)
        takes_scheduler = scheduler_is_remote and host.name == scheduler_host
        if host.local or not (ranks or takes_scheduler):
            continue
        plans.append(GatherPlan(host, ranks, job_files=False, scheduler=takes_scheduler))
    local_ranks = tuple((r.rank, r.log_dir, r.host) for r in job.ranks if job.host(r.host).local)
    plans.insert(0, GatherPlan(None, local_ranks, job_files=True, scheduler=not scheduler_is_remote))
    return plans


def _gather_host(
    plan: GatherPlan, open_files: Callable[[GatherPlan], HostFiles], stage: Path, include_checkpoints: bool
) -> HostGather:
    name = plan.host.name if plan.host is not None else "job dir"
    started = time.perf_counter()
    result = HostGather(host=name, uri="")
    try:
        files = open_files(plan)
    except ConnectionError as err:  # one line from the connection factory, reported as data
        result.error = str(err)
        result.problems.append(Problem("unreachable_host", f"host {name}: {result.error}", host=name))
        for rank, _, host in plan.rank_dirs:
            result.problems.append(Problem("rank_not_collected", f"rank {rank}: host {host} unreachable", rank, host))
        result.seconds = time.perf_counter() - started
        return result
    result.uri = files.uri("")
    try:
        wanted: list[SourceFile] = []
        if plan.job_files:
            wanted += [f for f in (files.walk_file(n) for n in JOB_LEVEL_FILES) if f is not None]
        if plan.scheduler:
            try:
                wanted += files.walk(SCHEDULER_DIR)
            except FileNotFoundError:
                pass  # only dynamic-mode jobs have a scheduler
        for rank, log_dir, host in plan.rank_dirs:
            try:
                wanted += files.walk(log_dir)
                result.ranks_found.append(rank)
            except FileNotFoundError:
                result.problems.append(
                    Problem("missing_rank_dir", f"rank {rank}: {files.uri(log_dir)} does not exist", rank, host)
                )
            except OSError as err:
                result.problems.append(Problem("unreadable_file", f"rank {rank}: {files.uri(log_dir)}: {err}", rank, host))
        wanted = [w for w in wanted if include_checkpoints or not w.rel.endswith(CHECKPOINT_SUFFIX)]
        for item in wanted:
            stage.joinpath(*item.rel.split("/")).parent.mkdir(parents=True, exist_ok=True)

        def fetch(item: SourceFile) -> ManifestEntry | Problem:
            try:
                fetched = files.fetch(item, stage.joinpath(*item.rel.split("/")))
            except (FileNotFoundError, PermissionError) as err:  # vanished since listed, or not ours to read
                return Problem("unreadable_file", f"{files.uri(item.rel)}: {err.strerror or err}", host=name)
            return ManifestEntry(item.rel, files.uri(item.rel), fetched.method, item.size, fetched.sha256)

        with ThreadPoolExecutor(max_workers=files.parallel_fetches) as pool:
            for outcome in pool.map(fetch, wanted):
                if isinstance(outcome, Problem):
                    result.problems.append(outcome)
                else:
                    result.entries.append(outcome)
    except OSError as err:  # the connection dropped mid-way: keep what arrived
        result.error = str(err)
        result.problems.append(Problem("unreachable_host", f"host {name}: lost while gathering: {err}", host=name))
    finally:
        files.close()
    result.seconds = time.perf_counter() - started
    return result


def gather(
    job: JobRecord,
    stage: Path,
    open_files: Callable[[GatherPlan], HostFiles],
    cache: HashCache,
    include_checkpoints: bool = True,
) -> GatherResult:
    plans = plan_gather(job)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        hosts = list(pool.map(lambda p: _gather_host(p, open_files, stage, include_checkpoints), plans))
    transfer_s = time.perf_counter() - started

    started = time.perf_counter()
    unhashed = [(h, i, e) for h in hosts for i, e in enumerate(h.entries) if e.sha256 is None]
    hashed_bytes = sum(e.size for _, _, e in unhashed)
    from_cache = 0

    def hash_one(item: tuple[HostGather, int, ManifestEntry]) -> tuple[HostGather, int, ManifestEntry, bool]:
        host, index, entry = item
        digest, cached = cache.sha256(stage.joinpath(*entry.path.split("/")))
        return host, index, ManifestEntry(entry.path, entry.source, entry.method, entry.size, digest), cached

    if unhashed:
        with ThreadPoolExecutor(max_workers=max(1, min(len(unhashed), os.cpu_count() or 1))) as pool:
            for host, index, entry, cached in pool.map(hash_one, unhashed):
                host.entries[index] = entry
                from_cache += int(cached)
    cache.save()
    return GatherResult(hosts, transfer_s, time.perf_counter() - started, hashed_bytes, from_cache)
