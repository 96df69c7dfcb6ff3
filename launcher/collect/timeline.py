"""What happened when in a job, from job.json and the collected checkpoints; pure (no files, no clock).

job.json (schema 1) records the job's start and end, the start and end of every rank's last
attempt, the number of restarts, the first failure and the hang watchdog's record. A later
resilience change may add ``status.attempts`` (one entry per attempt: started, ended, cause,
hosts), ``status.excluded_hosts`` and ``status.spare_hosts`` (names or objects with host,
at/time, reason) and ``status.stragglers`` (objects with rank or host, at/detected, and why):
each is drawn when present and its absence is no error. Times are seconds since the job
started.

With many ranks a row per rank is unreadable: above ``MAX_RANK_ROWS`` ranks the rows are
hosts, and a rank's events are drawn on its host's row.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

MAX_RANK_ROWS = 32


@dataclass(frozen=True)
class Span:
    """A bar on one row: a rank (or host) running an attempt, from start to end."""

    row: str
    start: float
    end: float
    attempt: int | None
    outcome: str  # succeeded | failed | stopped | running | unknown | restarted


@dataclass(frozen=True)
class Event:
    """A mark on one row (row None: the whole job, drawn as a vertical line)."""

    row: str | None
    at: float
    kind: str  # restart | hang | straggler | excluded | spare | checkpoint | failure
    label: str


@dataclass(frozen=True)
class Timeline:
    rows: tuple[str, ...]
    by_host: bool
    duration: float
    spans: tuple[Span, ...] = ()
    events: tuple[Event, ...] = ()
    notes: tuple[str, ...] = ()


def parse_time(value: Any) -> float | None:
    """POSIX seconds of an ISO-8601 time (job.json writes ...Z), None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _entries(value: Any) -> list[dict[str, Any]]:
    """A list of objects; a plain name becomes {"host": name}; anything else is dropped."""
    if not isinstance(value, list):
        return []
    return [item if isinstance(item, dict) else {"host": str(item)} for item in value
            if isinstance(item, (dict, str))]


def _is_rank(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _outcome(rank_status: Mapping[str, Any], job_state: str | None) -> str:
    if rank_status.get("stopped_by_launcher"):
        return "stopped"
    if rank_status.get("signal") or rank_status.get("exit_code") not in (None, 0):
        return "failed"
    if rank_status.get("exit_code") == 0:
        return "succeeded"
    return "running" if job_state in ("planned", "running") else "unknown"


def build_timeline(raw: Mapping[str, Any], checkpoints: Iterable[tuple[int, str, float]] = (),
                   max_rank_rows: int = MAX_RANK_ROWS) -> Timeline | None:
    """The job's timeline; None when job.json has no start time (a job that never started).

    ``checkpoints``: (rank, results path, mtime in POSIX seconds) of each collected checkpoint.
    """
    status = raw.get("status") if isinstance(raw.get("status"), dict) else {}
    origin = parse_time(status.get("started"))
    if origin is None:
        return None
    state = status.get("state")
    ranks = [r for r in _list(raw.get("ranks")) if isinstance(r, dict) and _is_rank(r.get("rank"))]
    host_of = {r["rank"]: str(r.get("host")) for r in ranks}
    by_host = len(ranks) > max_rank_rows
    hosts = list(dict.fromkeys(str(h.get("name")) for h in _list(raw.get("hosts")) if isinstance(h, dict)))

    def row_of(rank: Any = None, host: Any = None) -> str | None:
        # Fields a future launcher adds are read defensively: a rank that is not a known int has no row.
        if _is_rank(rank) and rank in host_of:
            return host_of[rank] if by_host else f"rank {rank}"
        if host is not None:
            return str(host) if by_host or str(host) in hosts else None
        return None

    def at(value: Any, default: float | None = None) -> float | None:
        moment = parse_time(value)
        return default if moment is None else moment - origin

    ended = at(status.get("ended"))
    notes: list[str] = []
    spans: list[Span] = []
    events: list[Event] = []
    rank_statuses = {s.get("rank"): s for s in _list(status.get("ranks"))
                     if isinstance(s, dict) and _is_rank(s.get("rank"))}
    known_ends = [at(s.get("ended")) for s in rank_statuses.values()]
    end_of_job = ended if ended is not None else max([t for t in known_ends if t is not None] + [0.0])

    attempts = _entries(status.get("attempts"))
    restarts = status.get("restarts") if isinstance(status.get("restarts"), int) else 0
    last_attempt_start = min((t for s in rank_statuses.values() if (t := at(s.get("started"))) is not None),
                             default=None)
    if len(attempts) > 1:
        # Every attempt but the last is a band on the rows of its hosts; the last is drawn per rank below.
        for index, attempt in enumerate(attempts[:-1]):
            start, stop = at(attempt.get("started"), 0.0), at(attempt.get("ended"), end_of_job)
            attempt_hosts = attempt.get("hosts") if isinstance(attempt.get("hosts"), list) else None
            for row in _rows_for_hosts(attempt_hosts, ranks, by_host) if attempt_hosts else _all_rows(ranks, by_host):
                spans.append(Span(row, start, stop, attempt.get("attempt", index), "restarted"))
            following = at(attempts[index + 1].get("started"), stop)
            events.append(Event(None, following, "restart",
                                f"restart {index + 1}: {attempt.get('cause') or 'cause not recorded'}"))
    elif restarts and last_attempt_start is not None:
        # job.json of schema 1 keeps only the last attempt's per-rank times and the count:
        # the earlier attempts are one band up to the last attempt's start.
        for row in _all_rows(ranks, by_host):
            spans.append(Span(row, 0.0, last_attempt_start, None, "restarted"))
        hang_record = status.get("hang") if isinstance(status.get("hang"), dict) else {}
        after_hangs = sum(1 for h in _list(hang_record.get("earlier"))
                          if isinstance(h, dict) and h.get("action") == "restarted")
        cause = (" (after a hang)" if after_hangs == restarts == 1 else
                 f" ({after_hangs} after a hang)" if after_hangs else "")
        events.append(Event(None, last_attempt_start, "restart",
                            f"{restarts} restart{'s' if restarts != 1 else ''} before this attempt{cause}"))
        notes.append(f"{restarts} restart(s): job.json records their number, not their times or causes; "
                     "the earlier attempts are drawn as one band")
    for rank in ranks:
        rank_status = rank_statuses.get(rank["rank"], {})
        start = at(rank_status.get("started"), last_attempt_start if last_attempt_start is not None else 0.0)
        stop = at(rank_status.get("ended"), end_of_job)
        spans.append(Span(row_of(rank["rank"]), start, max(stop, start), restarts, _outcome(rank_status, state)))
    failure = status.get("first_failure")
    if isinstance(failure, dict) and _is_rank(failure.get("rank")) and failure.get("rank") in host_of:
        stop = at(rank_statuses.get(failure["rank"], {}).get("ended"), end_of_job)
        how = f"signal {failure['signal']}" if failure.get("signal") else f"exit {failure.get('exit_code')}"
        events.append(Event(row_of(failure["rank"]), stop, "failure", f"rank {failure['rank']} failed ({how})"))
    hang = status.get("hang") if isinstance(status.get("hang"), dict) else None
    # The launcher keeps the hangs of restarted attempts under the last one ("earlier").
    hangs = [h for h in _list(hang.get("earlier")) if isinstance(h, dict)] + [hang] if hang else []
    for record in hangs:
        detected = at(record.get("detected"), end_of_job)
        stuck = [r for r in _list(record.get("stuck_ranks")) if _is_rank(r) and r in host_of]
        for rank in stuck:
            quiet = next((r.get("seconds_since_progress") for r in _list(record.get("ranks"))
                          if isinstance(r, dict) and r.get("rank") == rank), None)
            since = f", quiet {quiet:.0f} s" if isinstance(quiet, (int, float)) else ""
            events.append(Event(row_of(rank), detected, "hang",
                                f"rank {rank} hung ({record.get('kind') or 'no progress'}{since})"))
        if not stuck:
            events.append(Event(None, detected, "hang", f"hang ({record.get('kind') or 'no progress'})"))
    for kind, key in (("excluded", "excluded_hosts"), ("spare", "spare_hosts")):
        for entry in _entries(status.get(key)):
            moment = at(entry.get("at") or entry.get("time") or entry.get("detected"), end_of_job)
            host = entry.get("host") or entry.get("name")
            reason = f": {entry['reason']}" if entry.get("reason") else ""
            events.append(Event(row_of(host=host) if by_host else None, moment, kind,
                                f"{'excluded' if kind == 'excluded' else 'spare taken'} {host}{reason}"))
    for entry in _entries(status.get("stragglers")):
        moment = at(entry.get("at") or entry.get("detected") or entry.get("time"), end_of_job)
        row = row_of(entry.get("rank"), entry.get("host"))
        who = f"rank {entry['rank']}" if _is_rank(entry.get("rank")) else str(entry.get("host"))
        why = f" ({entry['reason']})" if entry.get("reason") else (
            f" ({entry['slowdown']:.1f}x slower)" if isinstance(entry.get("slowdown"), (int, float)) else "")
        events.append(Event(row, moment, "straggler", f"straggler {who}{why}"))
    outside = 0
    for rank, path, mtime in checkpoints:
        if not (_is_rank(rank) and rank in host_of):
            continue
        if not -1.0 <= mtime - origin <= end_of_job + 60.0:  # collected copies keep their source's mtime
            outside += 1
            continue
        # Rounded: with every rank saving, a host's ranks write the same step within moments.
        events.append(Event(row_of(rank), round(mtime - origin, 1), "checkpoint", path.rsplit("/", 1)[-1]))
    if outside:
        notes.append(f"{outside} checkpoint(s) written outside this job's time (an earlier job's, in the same "
                     "directory?) are not drawn")
    if by_host:
        spans, events = _merge_by_row(spans), list(dict.fromkeys(events))
    rows = tuple(dict.fromkeys([*(s.row for s in spans), *(e.row for e in events if e.row is not None)]))
    if by_host:
        rows = tuple(h for h in hosts if h in rows) + tuple(r for r in rows if r not in hosts)
        notes.append(f"{len(ranks)} ranks: one row per host ({len(rows)} hosts)")
    moments = [end_of_job, *(s.end for s in spans), *(e.at for e in events)]
    return Timeline(rows=rows, by_host=by_host, duration=max(moments + [1e-3]), spans=tuple(spans),
                    events=tuple(events), notes=tuple(notes))


def _all_rows(ranks: list[dict[str, Any]], by_host: bool) -> list[str]:
    if by_host:
        return list(dict.fromkeys(str(r.get("host")) for r in ranks))
    return [f"rank {r['rank']}" for r in ranks]


def _rows_for_hosts(hosts: list[Any], ranks: list[dict[str, Any]], by_host: bool) -> list[str]:
    names = {str(h) for h in hosts}
    if by_host:
        return [h for h in dict.fromkeys(str(r.get("host")) for r in ranks) if h in names]
    return [f"rank {r['rank']}" for r in ranks if str(r.get("host")) in names]


_OUTCOME_ORDER = ("failed", "stopped", "running", "unknown", "restarted", "succeeded")


def _merge_by_row(spans: list[Span]) -> list[Span]:
    """One bar per host and attempt: earliest start to latest end, the worst outcome of its ranks."""
    merged: dict[tuple[str, int | None], Span] = {}
    for span in spans:
        key = (span.row, span.attempt if span.outcome != "restarted" else -1)
        seen = merged.get(key)
        if seen is None:
            merged[key] = span
            continue
        worst = min(seen.outcome, span.outcome, key=_OUTCOME_ORDER.index)
        merged[key] = Span(span.row, min(seen.start, span.start), max(seen.end, span.end), span.attempt, worst)
    return list(merged.values())


def timeline_summary(tl: Timeline | None) -> dict[str, Any] | None:
    """summary.json's "timeline": rows and events (the bars are the ranks' times, already there)."""
    if tl is None:
        return None
    return {"rows_are": "hosts" if tl.by_host else "ranks", "rows": len(tl.rows), "duration_s": round(tl.duration, 3),
            "events": [{"row": e.row, "at_s": round(e.at, 3), "kind": e.kind, "label": e.label} for e in tl.events],
            "notes": list(tl.notes)}
