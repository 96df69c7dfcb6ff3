"""The one reader of job.json (schema 1, written by launcher/job/job_json.py): a typed JobRecord.

collect-results, ``launch-train --status``/``--stack`` and the SSH agent all read a job through
``load_job``: strictly (a FIFO, a hostile number, nesting or encoding is one line, never a
hang or a traceback). Hosts, ranks and their exits are typed; the whole document is kept as
``raw`` so the summary can quote the status verbatim, and ``plan()`` rebuilds the Plan that
was written (what an agent runs). Missing optional parts (a job still running has no exit
codes) are None, not errors; a file that is not a schema-1 job is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.job.json_input import JsonInputError, load_file

JOB_FILE = "job.json"


class JobFileError(ValueError):
    """job.json is missing or unusable; the message is one line naming the file."""


@dataclass(frozen=True)
class JobHost:
    """A host as job.json records it, with where it keeps its LOG<rank> dirs."""

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
    hosts: tuple[JobHost, ...]
    ranks: tuple[RankEntry, ...]
    args: tuple[str, ...]
    scheduler_host: str | None
    raw: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.job_id or "/" in self.job_id or self.job_id in (".", ".."):
            raise ValueError(f"job_id {self.job_id!r} cannot name a directory")
        names = {h.name for h in self.hosts}
        log_dirs = [r.log_dir for r in self.ranks]
        if len(set(log_dirs)) != len(log_dirs):
            twice = sorted({d for d in log_dirs if log_dirs.count(d) > 1})
            raise ValueError(f"log_dir {twice[0]!r} belongs to more than one rank")
        if len({r.rank for r in self.ranks}) != len(self.ranks):
            raise ValueError("a rank number appears twice in ranks")
        for rank in self.ranks:
            if rank.host not in names:
                raise ValueError(f"rank {rank.rank} runs on host {rank.host!r}, which is not in hosts")

    def host(self, name: str) -> JobHost:
        return next(h for h in self.hosts if h.name == name)

    @property
    def status(self) -> dict[str, Any]:
        return self.raw.get("status") or {}

    def plan(self):
        """The Plan the controller wrote (launcher.job.job_json.plan_from_job_document), nothing re-decided."""
        from launcher.job.job_json import plan_from_job_document

        try:
            return plan_from_job_document(self.raw)
        except (KeyError, TypeError, ValueError) as err:
            raise JobFileError(f"{self.job_dir}/{JOB_FILE}: not a plan this launcher can run ({err})") from None


# Bounds that no real job reaches and that keep every later int()/range() cheap.
MAX_RANKS = 1 << 20
MAX_DEVICE_ID = 1 << 16


def _int(value: Any, where: str, low: int, high: int) -> int:
    """An integer (JSON number without fraction, or a digit string) in low..high, else ValueError."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: {str(value)[:40]!r} is not an integer")
    if not low <= value <= high:
        raise ValueError(f"{where}: {value} is out of range {low}..{high}")
    return value


def _optional_int(value: Any, where: str, low: int, high: int) -> int | None:
    return None if value is None else _int(value, where, low, high)


def _optional_seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e10:
        raise ValueError(f"{where}: {str(value)[:40]!r} is not a duration in seconds")
    return float(value)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} is not an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{where} is not an array")
    return value


def _host(entry: Any, job_dir: str, index: int) -> JobHost:
    entry = _object(entry, f"hosts[{index}]")
    port = entry.get("port")
    return JobHost(
        name=str(entry["name"]),
        address=str(entry.get("address") or entry["name"]),
        user=None if entry.get("user") is None else str(entry["user"]),
        port=22 if not port else _int(port, f"hosts[{index}].port", 1, 65535),
        # A host whose job dir is this machine's too (Slurm nodes) is read in place, like a local one.
        local=bool(entry.get("local", False)) or bool(entry.get("shared_job_dir", False)),
        job_dir=str(entry.get("job_dir") or job_dir),
    )


def parse_job(doc: Any) -> JobRecord:
    """Build a JobRecord from a decoded job.json; ValueError/KeyError on bad shape or range."""
    if not isinstance(doc, dict):
        raise ValueError("top level is not an object")
    if doc.get("schema") != 1:
        raise ValueError(f"schema is {doc.get('schema')!r:.40}, this launcher reads schema 1")
    job_dir = str(doc["job_dir"])
    hosts = tuple(_host(h, job_dir, i) for i, h in enumerate(_list(doc["hosts"], "hosts")))
    status_doc = _object(doc.get("status") or {}, "status")
    exits = {}
    for index, entry in enumerate(_list(status_doc.get("ranks") or [], "status.ranks")):
        entry = _object(entry, f"status.ranks[{index}]")
        exits[_int(entry["rank"], f"status.ranks[{index}].rank", 0, MAX_RANKS)] = entry
    ranks = []
    for index, entry in enumerate(_list(doc["ranks"], "ranks")):
        entry = _object(entry, f"ranks[{index}]")
        rank = _int(entry["rank"], f"ranks[{index}].rank", 0, MAX_RANKS)
        status = exits.get(rank, {})
        where = f"status of rank {rank}"
        signal = status.get("signal")
        ranks.append(
            RankEntry(
                rank=rank,
                host=str(entry["host"]),
                device_id=_optional_int(entry.get("device_id"), f"ranks[{index}].device_id", 0, MAX_DEVICE_ID),
                log_dir=str(entry.get("log_dir") or f"LOG{rank}"),
                # Shells report 128+N for a signal; some launchers record -N.
                exit_code=_optional_int(status.get("exit_code"), f"{where}: exit_code", -255, 511),
                signal=None if signal is None else str(signal)[:32],
                duration_s=_optional_seconds(status.get("duration_s"), f"{where}: duration_s"),
            )
        )
    scheduler = doc.get("scheduler") or None
    if scheduler is not None:
        scheduler = _object(scheduler, "scheduler")
    return JobRecord(
        job_id=str(doc["job_id"]),
        job_dir=job_dir,
        hosts=hosts,
        ranks=tuple(sorted(ranks, key=lambda r: r.rank)),
        args=tuple(str(a) for a in _list(doc.get("args") or [], "args")),
        scheduler_host=None if scheduler is None else str(scheduler.get("host")),
        raw=doc,
    )


def load_job(job_dir: Path, file_name: str = JOB_FILE) -> JobRecord:
    """Read <job_dir>/job.json; JobFileError (one line naming the file) when unusable.

    Never blocks (a FIFO named job.json is refused without being opened for a blocking
    read) and never lets a hostile number, nesting or encoding escape as a traceback.
    ``file_name``: another document of the same schema in the job dir (an SSH agent reads its
    host's slice, launcher.remote.host_slice).
    """
    path = job_dir / file_name
    if not job_dir.is_dir():
        raise JobFileError(f"{job_dir}: not a directory")
    try:
        doc = load_file(path)
    except FileNotFoundError:
        raise JobFileError(f"{path}: no job.json here; JOB_DIR must be a job directory made by launch-train") from None
    except OSError as err:
        raise JobFileError(f"{path}: cannot read: {err.strerror or err}") from None
    except JsonInputError as err:
        raise JobFileError(f"{path}: {err}") from None
    try:
        return parse_job(doc)
    except KeyError as err:
        raise JobFileError(f"{path}: missing field {err.args[0]!r}") from None
    except (TypeError, ValueError) as err:
        raise JobFileError(f"{path}: {err}") from None


def newest_job_dir(jobs_root: Path) -> Path:
    """The most recently created job under jobs_root (by job.json 'created', then mtime)."""
    candidates = [p.parent for p in jobs_root.glob(f"*/{JOB_FILE}")] if jobs_root.is_dir() else []
    if not candidates:
        raise JobFileError(f"{jobs_root}: no job directories (with job.json) found; pass JOB_DIR")

    def created(job_dir: Path) -> tuple[str, float]:
        # A broken or hostile job.json among many only loses its place in the order here;
        # load_job() reports it if it is the one chosen.
        try:
            doc = load_file(job_dir / JOB_FILE)
            stamp = str(doc.get("created") or "") if isinstance(doc, dict) else ""
        except (OSError, ValueError):
            stamp = ""
        try:
            mtime = (job_dir / JOB_FILE).stat().st_mtime
        except OSError:
            mtime = 0.0
        return stamp, mtime

    return max(candidates, key=created)
