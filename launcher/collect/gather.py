"""Gather a job's files from every host into a staging directory.

Hosts are read in parallel (one thread each: the work is waiting on disks and
sockets). What cannot be gathered -- a host that does not answer, a missing LOG dir,
an unreadable file, a copy that failed half-way -- becomes a Problem, and everything
else is still gathered. Only verified files end up in `entries` (the manifest): a
file that failed is listed in `failed` and is not in the staging dir; links and
special files are listed in `skipped` and were never opened. Files that were
hard-linked are hashed afterwards, in parallel and through the hash cache; copied
files were hashed while their bytes went past and read back.
"""
from __future__ import annotations

import errno
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from console_progress import progress
from launcher.collect.hashing import HashCache
from launcher.job.job_record import JobHost, JobRecord
from launcher.collect.listing import Listing, NotFollowed, Skipped
from launcher.collect.sources import HostFiles, HostLost, SourceFile

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


@dataclass(frozen=True)
class FailedFile:
    path: str  # the results path it would have had
    source: str
    error: str

    def to_dict(self) -> dict:
        return {"path": self.path, "source": self.source, "error": self.error}


@dataclass(frozen=True)
class SkippedEntry:
    path: str  # relative to the job dir (and the results dir)
    source: str
    kind: str
    target: str

    def to_dict(self) -> dict:
        return {"path": self.path, "source": self.source, "kind": self.kind, "target": self.target or None}


@dataclass
class HostGather:
    """What one host gave: like fabric's GroupResult entry, succeeded unless `error`."""

    host: str
    uri: str
    entries: list[ManifestEntry] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    ranks_found: list[int] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
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

    @property
    def failed(self) -> list[FailedFile]:
        return sorted((f for h in self.hosts for f in h.failed), key=lambda f: f.path)

    @property
    def skipped(self) -> list[SkippedEntry]:
        return sorted((k for h in self.hosts for k in h.skipped), key=lambda k: k.path)


@dataclass(frozen=True)
class GatherPlan:
    """Which directories and files to take from one host."""

    host: JobHost | None  # None: the launch host's job dir (job.json's own directory)
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


def _skip(result: HostGather, files: HostFiles, skipped: Skipped, rank: int | None = None,
          host: str | None = None, consequence: str = "") -> None:
    result.skipped.append(SkippedEntry(skipped.rel, files.uri(skipped.rel), skipped.kind, skipped.detail))
    kind = "skipped_link" if skipped.is_link else "skipped_special"
    target = f" -> {skipped.detail}" if skipped.detail else ""
    what = "not followed" if skipped.is_link else "not read"
    result.problems.append(Problem(kind, f"{files.uri(skipped.rel)}{target}: a {skipped.kind}, {what}{consequence}",
                                   rank, host or result.host))


def _list_host(plan: GatherPlan, files: HostFiles, result: HostGather) -> list[SourceFile]:
    listing = Listing()
    if plan.job_files:
        for name in JOB_LEVEL_FILES:
            found = files.walk_file(name)
            if isinstance(found, Skipped):
                listing.skipped.append(found)
            elif found is not None:
                listing.files.append(found)
    if plan.scheduler:
        try:
            listing.extend(files.walk(SCHEDULER_DIR))
        except FileNotFoundError:
            pass  # only dynamic-mode jobs have a scheduler
        except NotFollowed as err:
            listing.skipped.append(err.skipped)
    for skipped in listing.skipped:
        _skip(result, files, skipped)
    wanted = list(listing.files)
    for rank, log_dir, host in plan.rank_dirs:
        try:
            found = files.walk(log_dir)
        except FileNotFoundError:
            result.problems.append(
                Problem("missing_rank_dir", f"rank {rank}: {files.uri(log_dir)} does not exist", rank, host))
            continue
        except NotFollowed as err:
            _skip(result, files, err.skipped, rank, host, f"; rank {rank} was not collected")
            continue
        except HostLost:
            raise
        except OSError as err:
            result.problems.append(Problem("unreadable_file", f"rank {rank}: {files.uri(log_dir)}: {err}", rank, host))
            continue
        result.ranks_found.append(rank)
        for skipped in found.skipped:
            _skip(result, files, skipped, rank, host)
        wanted += found.files
    return wanted


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
    lost: list[HostLost] = []
    try:
        try:
            wanted = _list_host(plan, files, result)
        except HostLost as err:
            lost.append(err)
            wanted = []
        wanted = [w for w in wanted if include_checkpoints or not w.rel.endswith(CHECKPOINT_SUFFIX)]
        made_dirs: set[Path] = set()

        def fetch(item: SourceFile) -> ManifestEntry | FailedFile:
            dest = stage.joinpath(*item.rel.split("/"))
            if lost:  # the session died on an earlier file: this one was never started
                return FailedFile(item.rel, files.uri(item.rel), f"not copied: {lost[0]}")
            try:
                if dest.parent not in made_dirs:
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    made_dirs.add(dest.parent)
                fetched = files.fetch(item, dest)
            except HostLost as err:
                lost.append(err)
                return FailedFile(item.rel, files.uri(item.rel), str(err))
            except OSError as err:  # vanished, not ours to read, EISDIR, ENOSPC, changed, short
                reason = err.strerror if err.strerror and not err.filename else str(err)
                if isinstance(err, FileNotFoundError):
                    reason = "vanished after it was listed"
                if err.errno == errno.ENOSPC:
                    disk_full.add(item.rel)
                return FailedFile(item.rel, files.uri(item.rel), reason or type(err).__name__)
            return ManifestEntry(item.rel, files.uri(item.rel), fetched.method, fetched.size, fetched.sha256)

        # Parallel copies share the results disk: a small file may find it full only while a
        # big one's partial copy (removed when it failed) held the space. Files that failed with
        # ENOSPC are tried once more, one at a time and smallest first, once every copy is done.
        disk_full: set[str] = set()
        with ThreadPoolExecutor(max_workers=files.parallel_fetches) as pool:
            outcomes = dict(zip((w.rel for w in wanted), pool.map(fetch, wanted)))
        for item in sorted((w for w in wanted if w.rel in disk_full), key=lambda w: w.size):
            outcomes[item.rel] = fetch(item)
        for outcome in (outcomes[w.rel] for w in wanted):
            if isinstance(outcome, FailedFile):
                result.failed.append(outcome)
                result.problems.append(Problem("copy_failed", f"{outcome.source}: {outcome.error}; not collected",
                                               host=name))
            else:
                result.entries.append(outcome)
    finally:
        files.close()
    if lost:
        result.error = str(lost[0])
        result.problems.append(Problem("host_lost", f"host {name}: {lost[0]}; {len(result.failed)} file(s) not collected",
                                       host=name))
    result.seconds = time.perf_counter() - started
    return result


def gather(
    job: JobRecord,
    stage: Path,
    open_files: Callable[[GatherPlan], HostFiles],
    cache: HashCache,
    include_checkpoints: bool = True,
    show_progress: bool = False,
    parallel: int = 64,
) -> GatherResult:
    """``parallel``: hosts read at once (--ssh-parallel): the pool, not the host count, bounds the
    threads and SSH connections open at a time."""
    plans = plan_gather(job)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(len(plans), parallel))) as pool, \
            progress(len(plans), "hosts", "collect-results", enabled=show_progress) as meter:
        futures = [pool.submit(_gather_host, plan, open_files, stage, include_checkpoints) for plan in plans]
        for _ in as_completed(futures):  # counted here, in one thread
            meter.update()
        hosts = [future.result() for future in futures]
    transfer_s = time.perf_counter() - started

    started = time.perf_counter()
    unhashed = [(h, i, e) for h in hosts for i, e in enumerate(h.entries) if e.sha256 is None]
    hashed_bytes = sum(e.size for _, _, e in unhashed)
    from_cache = 0

    def hash_one(item: tuple[HostGather, int, ManifestEntry]) -> tuple[HostGather, int, ManifestEntry | FailedFile, bool]:
        host, index, entry = item
        path = stage.joinpath(*entry.path.split("/"))
        try:
            # A link shares the source's inode: its size must still be the one linked.
            size = path.stat().st_size
            if size != entry.size:
                raise OSError(f"changed from {entry.size} to {size} bytes while collecting")
            digest, cached = cache.sha256(path)
        except OSError as err:
            path.unlink(missing_ok=True)
            return host, index, FailedFile(entry.path, entry.source, f"hashing failed: {err.strerror or err}"), False
        return host, index, ManifestEntry(entry.path, entry.source, entry.method, entry.size, digest), cached

    if unhashed:
        failed: list[tuple[HostGather, int]] = []
        with ThreadPoolExecutor(max_workers=max(1, min(len(unhashed), os.cpu_count() or 1))) as pool, \
                progress(len(unhashed), "files hashed", "collect-results", enabled=show_progress) as meter:
            for host, index, entry, cached in pool.map(hash_one, unhashed):
                meter.update()
                if isinstance(entry, FailedFile):
                    host.failed.append(entry)
                    host.problems.append(Problem("copy_failed", f"{entry.source}: {entry.error}; not collected", host=host.host))
                    failed.append((host, index))
                else:
                    host.entries[index] = entry
                    from_cache += int(cached)
        for host, index in sorted(failed, key=lambda f: -f[1]):
            del host.entries[index]
    cache.save()
    return GatherResult(hosts, transfer_s, time.perf_counter() - started, hashed_bytes, from_cache)
