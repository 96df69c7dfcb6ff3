"""Read the launcher's job.json (schema 1, written by launcher/job/job_json.py) into typed records.

Only what collecting needs is typed; the whole document is kept as `raw` so the
summary can quote the status verbatim. Missing optional parts (a job still running
has no exit codes) are None, not errors; a file that is not a schema-1 job is.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.collect.errors import CollectInputError

JOB_FILE = "job.json"


@dataclass(frozen=True)
class HostEntry:
    name: str
    address: str
    user: str | None
    port: int
    local: bool
    # Where this host keeps its LOG<rank> dirs; the job's job_dir unless the launcher
    # recorded a different one for this host.
    job_dir: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("host entry needs a non-empty name")
        if not 0 < self.port < 65536:
            raise ValueError(f"host {self.name}: port {self.port} is not in 1..65535")


@dataclass(frozen=True)
class RankEntry:
    rank: int
    host: str
    device_id: int | None
    log_dir: str
    exit_code: int | None = None
    signal: str | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError(f"rank {self.rank} is negative")
        if not self.log_dir or "/" in self.log_dir or self.log_dir in (".", ".."):
            raise ValueError(f"rank {self.rank}: log_dir {self.log_dir!r} must be a plain directory name")


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    job_dir: str
    hosts: tuple[HostEntry, ...]
    ranks: tuple[RankEntry, ...]
    args: tuple[str, ...]
    scheduler_host: str | None
    raw: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.job_id or "/" in self.job_id or self.job_id in (".", ".."):
            raise ValueError(f"job_id {self.job_id!r} cannot name a directory")
        names = {h.name for h in self.hosts}
        for rank in self.ranks:
            if rank.host not in names:
                raise ValueError(f"rank {rank.rank} runs on host {rank.host!r}, which is not in hosts")

    def host(self, name: str) -> HostEntry:
        return next(h for h in self.hosts if h.name == name)

    @property
    def status(self) -> dict[str, Any]:
        return self.raw.get("status") or {}


def _host(entry: dict[str, Any], job_dir: str) -> HostEntry:
    return HostEntry(
        name=str(entry["name"]),
        address=str(entry.get("address") or entry["name"]),
        user=entry.get("user"),
        port=int(entry.get("port") or 22),
        # A host whose job dir is this machine's too (Slurm nodes) is read in place, like a local one.
        local=bool(entry.get("local", False)) or bool(entry.get("shared_job_dir", False)),
        job_dir=str(entry.get("job_dir") or job_dir),
    )


def parse_job(doc: Any) -> JobRecord:
    """Build a JobRecord from a decoded job.json; ValueError/KeyError/TypeError on bad shape."""
    if not isinstance(doc, dict):
        raise ValueError("top level is not an object")
    if doc.get("schema") != 1:
        raise ValueError(f"schema is {doc.get('schema')!r}, this collect-results reads schema 1")
    job_dir = str(doc["job_dir"])
    hosts = tuple(_host(h, job_dir) for h in doc["hosts"])
    exits = {int(r["rank"]): r for r in ((doc.get("status") or {}).get("ranks") or [])}
    ranks = []
    for entry in doc["ranks"]:
        rank = int(entry["rank"])
        status = exits.get(rank, {})
        ranks.append(
            RankEntry(
                rank=rank,
                host=str(entry["host"]),
                device_id=None if entry.get("device_id") is None else int(entry["device_id"]),
                log_dir=str(entry.get("log_dir") or f"LOG{rank}"),
                exit_code=None if status.get("exit_code") is None else int(status["exit_code"]),
                signal=status.get("signal"),
                duration_s=None if status.get("duration_s") is None else float(status["duration_s"]),
            )
        )
    scheduler = doc.get("scheduler") or None
    return JobRecord(
        job_id=str(doc["job_id"]),
        job_dir=job_dir,
        hosts=hosts,
        ranks=tuple(sorted(ranks, key=lambda r: r.rank)),
        args=tuple(str(a) for a in doc.get("args") or ()),
        scheduler_host=None if scheduler is None else str(scheduler.get("host")),
        raw=doc,
    )


def load_job(job_dir: Path) -> JobRecord:
    """Read <job_dir>/job.json; CollectInputError (one line naming the file) when unusable."""
    path = job_dir / JOB_FILE
    if not job_dir.is_dir():
        raise CollectInputError(f"{job_dir}: not a directory")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CollectInputError(f"{path}: no job.json here; JOB_DIR must be a job directory made by launch-train") from None
    except OSError as err:
        raise CollectInputError(f"{path}: cannot read: {err.strerror}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise CollectInputError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    try:
        return parse_job(doc)
    except KeyError as err:
        raise CollectInputError(f"{path}: missing field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise CollectInputError(f"{path}: {err}") from None


def newest_job_dir(jobs_root: Path) -> Path:
    """The most recently created job under jobs_root (by job.json 'created', then mtime)."""
    candidates = [p.parent for p in jobs_root.glob(f"*/{JOB_FILE}")] if jobs_root.is_dir() else []
    if not candidates:
        raise CollectInputError(f"{jobs_root}: no job directories (with job.json) found; pass JOB_DIR")

    def created(job_dir: Path) -> tuple[str, float]:
        try:
            stamp = str(json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8")).get("created") or "")
        except (OSError, ValueError, AttributeError):
            stamp = ""
        return stamp, (job_dir / JOB_FILE).stat().st_mtime

    return max(candidates, key=created)
