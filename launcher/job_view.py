"""`launch-train --status JOB_DIR` and `--stack JOB_DIR`: looking at a job while it runs.

Both read job.json (strictly: a hostile file is one line, exit 2) and find the job's
processes on this machine by the markers env.sh gives every rank (launcher/run/hang.py),
so they work from any shell, not only from the launcher that started the job. Ranks on
other hosts are listed from job.json and their logs, when the job dir is shared.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, TextIO

from launcher.errors import LaunchError
from launcher.job.job_record import JobFileError, load_job
from launcher.job.safe_text import visible
from launcher.log_format import LOSS_LINE
from launcher.run.logs import tail_lines


def _load(job_dir: Path) -> dict[str, Any]:
    """job.json through the one reader (launcher.job.job_record), as the document it checked."""
    try:
        return load_job(Path(job_dir)).raw
    except JobFileError as err:
        raise LaunchError(str(err)) from None


def _ranks(doc: dict) -> list[dict]:
    out = []
    for entry in doc["ranks"]:
        if isinstance(entry, dict) and isinstance(entry.get("rank"), int) and not isinstance(entry.get("rank"), bool):
            out.append(entry)
    return sorted(out, key=lambda r: r["rank"])


def _local_hosts(doc: dict) -> set[str]:
    return {str(h.get("name")) for h in doc["hosts"] if isinstance(h, dict) and h.get("local")}


def last_step(log: Path) -> str:
    """The last `epoch: E step: S, loss is L` line of a log, shortened ("epoch 1 step 20, loss 0.11"), or "no step yet"."""
    for line in reversed(tail_lines(log, 200).splitlines()):
        match = LOSS_LINE.search(line)
        if match:
            return f"epoch {match.group(1)} step {match.group(2)}, loss {match.group(3)}"
    return "no step yet"


class _VisibleLines:
    """A text stream whose lines have every control character escaped (job.json, logs and py-spy
    output are not ours: an ESC or CR in them must not drive the terminal)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, line: str) -> None:
        self._out.write(visible(line.removesuffix("\n"), limit=1 << 16) + "\n")


def show_status(job_dir: Path, out: TextIO) -> int:
    from launcher.run.hang import rank_processes

    out = _VisibleLines(out)  # type: ignore[assignment]
    job_dir = Path(job_dir).resolve()
    doc = _load(job_dir)
    status = doc.get("status") if isinstance(doc.get("status"), dict) else {}
    state = status.get("state") or "unknown"
    out.write(f"job {doc.get('job_id')}: {state}, started {status.get('started') or '-'}, "
              f"{len(_ranks(doc))} ranks, {doc.get('platform')} / {doc.get('mode')}; job dir {job_dir}\n")
    hang = status.get("hang")
    if isinstance(hang, dict) and hang.get("message"):
        out.write(f"  hang watchdog: {hang['message']}\n")
    slow = {}
    for record in status.get("stragglers") or []:
        if isinstance(record, dict) and isinstance(record.get("rank"), int):
            slow[record["rank"]] = record
            out.write(f"  straggler: rank {record['rank']} on {record.get('host')}: {record.get('reason')}\n")
    for record in status.get("excluded_hosts") or []:
        if isinstance(record, dict):
            out.write(f"  host lost: {record.get('host')} ({record.get('reason')}), attempt {record.get('attempt')}\n")
    local = _local_hosts(doc)
    procs = rank_processes(str(job_dir))
    now = time.time()
    for entry in _ranks(doc):
        rank, host = entry["rank"], str(entry.get("host"))
        log_dir = str(entry.get("log_dir") or f"LOG{rank}").replace("/", "_")
        log = job_dir / log_dir / "log.txt"
        try:
            quiet = f"last log line {now - log.stat().st_mtime:.0f} s ago"
        except OSError:
            quiet = "no log"
        running = procs.get(rank, [])
        if running:
            main = running[0]
            try:
                how = f"running (pid {main.pid}, {main.status()}, {len(running)} process{'es' if len(running) > 1 else ''})"
            except Exception:  # noqa: BLE001 - psutil: the process just ended
                how = "ending"
        elif host in local:
            how = "not running"
        else:
            how = "on another host (not inspected from here)"
        mark = " SLOW" if rank in slow else ""
        out.write(f"  rank {rank:>3} [{host}]{mark} {how}; {last_step(log)}; {quiet}\n")
    return 0


def show_stacks(job_dir: Path, out: TextIO) -> int:
    from launcher.run.hang import look_at_ranks

    out = _VisibleLines(out)  # type: ignore[assignment]
    job_dir = Path(job_dir).resolve()
    doc = _load(job_dir)
    local = _local_hosts(doc)
    ranks = [r for r in _ranks(doc) if str(r.get("host")) in local]
    if not ranks:
        raise LaunchError(f"--stack {job_dir}: no rank of this job runs on this machine (hosts: "
                          f"{', '.join(visible(h.get('name'), 60) for h in doc['hosts'] if isinstance(h, dict))})")
    log_dirs = {r["rank"]: str(r.get("log_dir") or f"LOG{r['rank']}").replace("/", "_") for r in ranks}
    looks = look_at_ranks(job_dir, {r["rank"]: str(r["host"]) for r in ranks},
                          f"launch-train --stack {job_dir}", log_dirs)
    written = 0
    for rank in sorted(looks):
        look = looks[rank]
        if look.stack:
            written += 1
            where = f" waiting in {look.waiting_in}" if look.waiting_in else ""
            out.write(f"rank {rank} [{look.host}]: {job_dir / look.stack} ({look.state}{where})\n")
        else:
            out.write(f"rank {rank} [{look.host}]: {look.state}; no stack\n")
    return 0 if written else 1
