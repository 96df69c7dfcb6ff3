"""job.json: the plan and, at the end, what happened to every rank (schema 1).

Building the document is pure; ``write_job_json`` writes it atomically (launcher's one
atomic writer), so a reader never sees half a file. Its text (``job_json_text``) is encoded
once per write, and the plan's part of it -- most of it: every rank's environment and command,
unchanged during an attempt -- once per plan. ``plan_from_job_document`` reads it
back into a Plan (the per-host agent runs exactly what the controller planned);
collect-results reads it into its own typed records (launcher.collect.jobfile).
"""
from __future__ import annotations

import errno
import json
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from launcher.atomic_write import write_atomic
from launcher.run.failures import RankExit, RankFailure
from launcher.job.plan import Plan

SCHEMA = 1
STATES = ("planned", "running", "succeeded", "failed", "interrupted")


def utc_now() -> str:
    from datetime import datetime, timezone  # here: the per-host agent's start does without it

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
    # A save-and-stop before a preemption: {signal, requested, grace_s, saved_step, all_saved}.
    preempted: Optional[dict] = None
    # Earlier launches of this job dir (launch-train --resume): their status documents, oldest first.
    earlier_launches: tuple[dict, ...] = ()
    # This launch's attempts: {attempt, started, ended, state, cause, hosts}, in order.
    attempts: tuple[dict, ...] = ()
    # Hosts lost ({host, reason, at, attempt}) and spares that took their place ({host, replaces, ...}).
    excluded_hosts: tuple[dict, ...] = ()
    spare_hosts: tuple[dict, ...] = ()
    # Ranks named slow: {rank, host, metric, step_s, median_s, ratio, at, reason} (launcher/run/stragglers.py).
    stragglers: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"job state {self.state!r}: use one of {', '.join(STATES)}")
        if self.restarts < 0:
            raise ValueError("restarts must be >= 0")


def job_document(plan: Plan, status: JobStatus = JobStatus()) -> dict[str, Any]:
    return {**_plan_document(plan), "status": _status_document(plan, status)}


def _plan_document(plan: Plan) -> dict[str, Any]:
    """Everything of job.json but the status, which comes last."""
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
        # The launch-train arguments of this job: what `launch-train --resume JOB_DIR` runs again.
        "argv": list(spec.argv),
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
                "stopped_by_launcher": e.stopped_by_launcher if e else None,
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
            "log": f"{plan.ranks[f.rank].log_dir}/log.txt",  # relative to the job dir (schema 1)
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
        "preempted": status.preempted,
        "earlier_launches": list(status.earlier_launches),
        "attempts": list(status.attempts),
        "excluded_hosts": list(status.excluded_hosts),
        "spare_hosts": list(status.spare_hosts),
        "stragglers": list(status.stragglers),
    }


def job_json_text(plan: Plan, status: JobStatus = JobStatus()) -> str:
    """``json.dumps(job_document(plan, status), indent=2) + "\\n"``, byte for byte, with the plan's part
    encoded once per plan: indent=2 takes json's pure-Python encoder (~0.25 s of CPU for 1,024 hosts x 8,
    twice at every start), and only the status, the document's last key, changes between writes."""
    # The status is one level down: every line of it after the first is indented once more (JSON text
    # holds no raw newline inside a string, so every newline is one between lines).
    status_text = json.dumps(_status_document(plan, status), indent=2).replace("\n", "\n  ")
    return f'{_plan_text(plan)},\n  "status": {status_text}\n}}\n'


_encoded_plan: "tuple[weakref.ref, str] | None" = None


def _plan_text(plan: Plan) -> str:
    """job.json up to the status (without the closing brace) for this plan, from the last call when it
    was for the same plan."""
    global _encoded_plan
    if _encoded_plan is not None and _encoded_plan[0]() is plan:
        return _encoded_plan[1]
    text = json.dumps(_plan_document(plan), indent=2)
    text = text[:text.rindex("\n}")]
    _encoded_plan = (weakref.ref(plan), text)
    return text


def write_job_json(job_dir: Path, plan: Plan, status: JobStatus = JobStatus()) -> Path:
    """Atomically; on a full disk the job dir's reserve (disk_space.py) is given back and the write retried."""
    from launcher.job.disk_space import release_reserve

    path = Path(job_dir) / "job.json"
    text = job_json_text(plan, status)
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


def plan_from_job_document(document: dict) -> Plan:
    """The Plan the controller wrote into job.json, rebuilt as objects (nothing re-decided here).

    Ranks and scheduler are taken verbatim from the document; the JobSpec around them
    carries what the local supervision code reads (job dir, mode, hosts).
    """
    from launcher.job.hosts import Host
    from launcher.job.plan import HostSlots, Rank, Scheduler
    from launcher.job.spec import Entry, JobSpec

    job_dir = Path(document["job_dir"])
    hosts = tuple(
        Host(name=h["name"], address=h["address"], user=h.get("user"), port=int(h.get("port") or 22),
             local=bool(h.get("local")))
        for h in document["hosts"]
    )
    ranks = []
    host_index = {host.name: index for index, host in enumerate(hosts)}
    for item in document["ranks"]:
        env = dict(item.get("env") or {})
        ranks.append(Rank(
            rank=int(item["rank"]), host=item["host"], host_index=host_index[item["host"]],
            local_index=int(item["local_index"]), device_id=int(item["device_id"]),
            command=tuple(item["command"]), log_dir=item["log_dir"],
            cpus=tuple(item["cpus"]) if item.get("cpus") else None, launch_env=env,
        ))
    ranks.sort(key=lambda rank: rank.rank)
    first_host = [r for r in ranks if r.host_index == 0]
    devices = tuple(r.device_id for r in sorted(first_host, key=lambda r: r.local_index))
    scheduler_doc = document.get("scheduler")
    rank_table = rank_table_json = None
    if document["mode"] == "rank-table":
        from hccl import rank_table as rank_tables

        rank_table_json = (job_dir / "rank_table.json").read_text()
        rank_table = rank_tables.loads(rank_table_json)
    entry = document["entry"]
    spec = JobSpec(
        job_id=document["job_id"], job_dir=job_dir, created=document["created"], hosts=hosts,
        devices=devices, platform=document["platform"], mode=document["mode"],
        entry=Entry(module=entry.get("module"), script=Path(entry["script"]) if entry.get("script") else None),
        python=ranks[0].command[0], args=tuple(document.get("args") or ()), env=dict(document.get("env") or {}),
        sched_port=int(scheduler_doc["port"]) if scheduler_doc else None,
        rank_table=rank_table, rank_table_json=rank_table_json,
    )
    scheduler = None
    if scheduler_doc:
        # The scheduler's command and environment are in its rendered run.sh; the group only starts that.
        scheduler = Scheduler(host=scheduler_doc["host"], address=scheduler_doc["address"],
                              port=int(scheduler_doc["port"]), command=(spec.python,), env={},
                              log_dir=str(Path(scheduler_doc.get("log", "scheduler/log.txt")).parent))
    slots = {host.name: sum(1 for r in ranks if r.host == host.name) for host in hosts}
    host_slice = document.get("host_slice")  # one host's part only (launcher.remote.host_slice)
    return Plan(spec=spec, ranks=tuple(ranks), hosts=tuple(HostSlots(h, slots[h.name]) for h in hosts),
                scheduler=scheduler, host_slice=str(host_slice["host"]) if host_slice else None)
