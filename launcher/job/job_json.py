"""job.json: the plan and, at the end, what happened to every rank (schema 1, see CONTRACTS).

Building the document is pure; ``write_job_json`` writes it atomically (temp name in
the same directory, then rename), so a reader never sees half a file.
"""
from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.run.failures import RankExit, RankFailure
from launcher.job.plan import Plan

SCHEMA = 1
STATES = ("planned", "running", "succeeded", "failed", "interrupted")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class JobStatus:
    """What job.json says about how the job went."""

    state: str = "planned"
    started: Optional[str] = None
    ended: Optional[str] = None
    wall_time_s: Optional[float] = None
    exit_code: Optional[int] = None
    restarts: int = 0
    rank_exits: tuple[RankExit, ...] = ()
    first_failure: Optional[RankFailure] = None
    hang: Optional[dict] = None  # the hang watchdog's record (launcher/run/hang.py), JSON-ready

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"job state {self.state!r}: use one of {', '.join(STATES)}")
        if self.restarts < 0:
            raise ValueError("restarts must be >= 0")


def job_document(plan: Plan, status: JobStatus = JobStatus()) -> dict[str, Any]:
    spec = plan.spec
    scheduler = None
    if plan.scheduler is not None:
        scheduler = {
            "host": plan.scheduler.host,
            "address": plan.scheduler.address,
            "port": plan.scheduler.port,
            "log": f"{plan.scheduler.log_dir}/log.txt",
        }
    return {
        "schema": SCHEMA,
        "job_id": spec.job_id,
        "job_dir": str(spec.job_dir),
        "created": spec.created,
        "platform": spec.platform,
        "mode": spec.mode,
        "hosts": [
            {
                "name": entry.host.name,
                "address": entry.host.address,
                "user": entry.host.user,
                "port": entry.host.port,
                "local": entry.host.local,
                "shared_job_dir": entry.host.shared_job_dir,
                "slots": entry.slots,
            }
            for entry in plan.hosts
        ],
        "entry": spec.entry.to_json(),
        "args": list(spec.args),
        "rank_size": plan.rank_size,
        "env": dict(spec.env),
        "scheduler": scheduler,
        "ranks": [
            {
                "rank": r.rank,
                "host": r.host,
                "local_index": r.local_index,
                "device_id": r.device_id,
                "log_dir": r.log_dir,
                "env": r.env,
                "command": list(r.command),
                "cpus": list(r.cpus) if r.cpus is not None else None,
            }
            for r in plan.ranks
        ],
        "status": _status_document(plan, status),
    }


def _status_document(plan: Plan, status: JobStatus) -> dict[str, Any]:
    exits = {e.rank: e for e in status.rank_exits}
    ranks = []
    for r in plan.ranks:
        e = exits.get(r.rank)
        ranks.append(
            {
                "rank": r.rank,
                "host": r.host,
                "exit_code": e.exit_code if e else None,
                "signal": e.signal_name if e else None,
                "started": e.started if e else None,
                "ended": e.ended if e else None,
                "duration_s": e.duration_s if e else None,
            }
        )
    failure = None
    if status.first_failure is not None:
        f = status.first_failure
        failure = {
            "rank": f.rank,
            "host": f.host,
            "exit_code": f.exit_code,
            "signal": f.signal_name,
            "log": f"LOG{f.rank}/log.txt",  # relative to the job dir (schema 1); the console shows where it is
            "tail": f.tail,
            "note": f.note,
        }
    return {
        "state": status.state,
        "started": status.started,
        "ended": status.ended,
        "wall_time_s": status.wall_time_s,
        "exit_code": status.exit_code,
        "restarts": status.restarts,
        "ranks": ranks,
        "first_failure": failure,
        "hang": status.hang,
    }


def write_atomic(path: Path, text: str, *, executable: bool = False) -> None:
    """Write ``text`` to a temp name next to ``path`` and rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if executable:
            os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_job_json(job_dir: Path, document: dict[str, Any]) -> Path:
    """Atomically; on a full disk the job dir's reserve (disk_space.py) is given back and the write retried."""
    from launcher.job.disk_space import release_reserve

    path = Path(job_dir) / "job.json"
    text = json.dumps(document, indent=2) + "\n"
    try:
        write_atomic(path, text)
    except OSError as exc:
        if exc.errno != errno.ENOSPC or not release_reserve(job_dir):
            raise
        write_atomic(path, text)
    return path


def merge_exits(earlier: Sequence[RankExit], later: Sequence[RankExit]) -> tuple[RankExit, ...]:
    """Later observations of a rank replace earlier ones (restarts)."""
    by_rank = {e.rank: e for e in earlier}
    by_rank.update({e.rank: e for e in later})
    return tuple(by_rank[k] for k in sorted(by_rank))
