"""When the watchdog finds the job hung: look at every rank, write its stacks down, name who is stuck.

    looks = look_at_ranks(job_dir, {0: "host-a", 1: "host-a"}, title)   # effects: py-spy, stack.txt
    stuck = narrow_stuck(verdict, looks)                                 # pure
    record = hang_record(verdict, looks, stuck, action="stopped")         # pure, for job.json

A rank's processes on this machine are found by what env.sh gave them
(LAUNCH_TRAIN_JOB_DIR = the job dir, RANK_ID = the rank; the scheduler has MS_ROLE=MS_SCHED
and no rank), so this works for every kind of group, and for `launch-train --stack` on
a job this launcher did not start. Each rank's Python processes are dumped in parallel
(launcher/run/stacks.py) into LOG<rank>/stack.txt, written atomically.
"""
from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

import psutil

from launcher.atomic_write import write_atomic
from launcher.job.job_json import utc_now
from launcher.job.rank_env import JOB_MARKER_VAR
from launcher.run.stacks import DEFAULT_TIMEOUT_S, StackDump, dump_stacks, stack_file_text
from launcher.run.watchdog import HangVerdict

STACK_FILE = "stack.txt"


@dataclass(frozen=True)
class RankLook:
    """What one rank's processes showed: their state, where the main one waits, where the dump went."""

    rank: int
    host: str
    pids: tuple[int, ...]
    state: str  # the rank's main process ("not running here" when none was found)
    waiting_in: Optional[str]
    stack: Optional[str]  # LOG<rank>/stack.txt, relative to the job dir, when written


def rank_processes(job_dir: str) -> dict[int, list[psutil.Process]]:
    """This machine's processes of the job, by rank (parents before children).

    The marker variables alone are not proof: any process can carry them. A process counts
    only when it is owned by the user who ran the job -- the owner of its job.json, which the
    launcher writes first (so root looking at a job never touches another user's processes)
    -- and it descends from one started with a script of this job dir (the keeper's
    ``bash <job>/LOG<rank>/run.sh``, slurm_rank.sh, mpi_rank.sh).
    """
    try:
        owner = os.stat(os.path.join(job_dir, "job.json")).st_uid
    except OSError:
        return {}
    found: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["pid", "ppid"]):
        if proc.pid == os.getpid():
            continue
        try:
            if proc.uids().real != owner or proc.uids().effective != owner:
                continue
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if env.get(JOB_MARKER_VAR) != job_dir or env.get("MS_ROLE") == "MS_SCHED" or "RANK_ID" not in env:
            continue
        if not _started_by_the_job(proc, job_dir):
            continue
        try:
            found.setdefault(int(env["RANK_ID"]), []).append(proc)
        except ValueError:
            continue
    for procs in found.values():
        pids = {p.pid for p in procs}
        # The rank's main process is the one whose parent is not itself one of the rank's.
        procs.sort(key=lambda p: (p.info["ppid"] in pids, p.pid))
    return found


def _started_by_the_job(proc: psutil.Process, job_dir: str) -> bool:
    """Whether an ancestor of proc was started with a file of job_dir as an argument."""
    inside = job_dir.rstrip("/") + "/"
    try:
        for ancestor in proc.parents():
            if any(arg.startswith(inside) for arg in ancestor.cmdline()):
                return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
        return False
    return False


def rank_log_dir(job_dir: Path, name: str) -> Optional[Path]:
    """job_dir/name when name is one plain entry of the job dir that is a real directory, else None.

    log_dir comes from job.json, which anyone who can write the job dir can change: ``..`` or
    a LOG<rank> that is a symlink to elsewhere must not make --stack write outside the job.
    """
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        return None
    path = Path(job_dir) / name
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return path if stat.S_ISDIR(mode) else None


def _is_python(proc: psutil.Process) -> bool:
    try:
        return "python" in os.path.basename(proc.exe() or "") or "python" in os.path.basename(proc.cmdline()[0])
    except (psutil.Error, IndexError, OSError):
        return False


def look_at_ranks(job_dir: Path, hosts: Mapping[int, str], title: str, log_dirs: Optional[Mapping[int, str]] = None,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[int, RankLook]:
    """Dump the stacks of the given ranks' processes on this machine into LOG<rank>/stack.txt."""
    by_rank = rank_processes(str(job_dir))
    wanted = {rank: [p for p in by_rank.get(rank, []) if _is_python(p)] or by_rank.get(rank, [])[:1] for rank in hosts}
    dumps = dump_stacks([p.pid for procs in wanted.values() for p in procs], timeout_s=timeout_s)
    looks: dict[int, RankLook] = {}
    for rank, host in hosts.items():
        procs = wanted[rank]
        rank_dumps: list[StackDump] = [dumps[p.pid] for p in procs if p.pid in dumps]
        log_dir = (log_dirs or {}).get(rank, f"LOG{rank}")
        main = rank_dumps[0] if rank_dumps else None
        stack_rel = None
        directory = rank_log_dir(Path(job_dir), log_dir)
        if rank_dumps and directory is not None:
            text = stack_file_text(f"{title}\nrank {rank} on {host}, {utc_now()}", rank_dumps)
            try:
                write_atomic(directory / STACK_FILE, text)
                stack_rel = f"{log_dir}/{STACK_FILE}"
            except OSError:
                stack_rel = None  # a full disk must not hide the verdict; the message still names the rank
        looks[rank] = RankLook(rank, host, tuple(p.pid for p in procs),
                               main.state if main else "not running here",
                               next((d.waiting_in for d in rank_dumps if d.waiting_in), None), stack_rel)
    return looks


def narrow_stuck(verdict: HangVerdict, looks: Mapping[int, RankLook]) -> tuple[int, ...]:
    """The verdict's ranks furthest behind; of those, the stopped or vanished ones if any (pure)."""
    frozen = tuple(r for r in verdict.stuck if r in looks and (looks[r].state.startswith("stopped")
                                                                or looks[r].state in ("zombie", "dead")))
    return frozen or verdict.stuck


def hang_message(verdict: HangVerdict, looks: Mapping[int, RankLook], stuck: Iterable[int]) -> str:
    """One line for the console: who is stuck, how, where (pure)."""
    parts = []
    for rank in stuck:
        watch = next(w for w in verdict.ranks if w.rank == rank)
        look = looks.get(rank)
        how = f"{look.state}, waiting in {look.waiting_in}" if look and look.waiting_in else (look.state if look else "?")
        parts.append(f"rank {rank} on {watch.host} ({watch.where()}, quiet for {verdict.quiet_for(rank):.0f} s; {how})")
    what = "no first step" if verdict.kind == "no first step" else "no new step"
    others = [r for r in verdict.hung if r not in set(stuck)]
    tail = f"; waiting for it: rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))}" if others else ""
    return f"hung ({what} within {verdict.timeout_s:g} s): {'; '.join(parts)}{tail}"


def _ms_up(seconds: float) -> float:
    """Seconds to the millisecond, rounded up: a rank reported quiet for longer than the limit
    (the watchdog's test is ``>``) never reads as exactly the limit, as round() could make it."""
    return math.ceil(seconds * 1000) / 1000


def hang_record(verdict: HangVerdict, looks: Mapping[int, RankLook], stuck: tuple[int, ...], action: str,
                message: str, detected: str) -> dict:
    """job.json's status.hang (pure; collect-results reads it back). ``detected``: when the verdict fell (UTC)."""
    ranks = []
    for watch in verdict.ranks:
        look = looks.get(watch.rank)
        ranks.append({
            "rank": watch.rank, "host": watch.host, "steps": watch.steps, "epoch": watch.epoch,
            "last_step": watch.step, "seconds_since_progress": _ms_up(verdict.quiet_for(watch.rank)),
            "ended": watch.ended, "state": look.state if look else None,
            "waiting_in": look.waiting_in if look else None, "stack": look.stack if look else None,
            "pids": list(look.pids) if look else [],
        })
    return {"detected": detected, "kind": verdict.kind, "timeout_s": verdict.timeout_s, "stuck_ranks": list(stuck),
            "hung_ranks": list(verdict.hung), "action": action, "message": message, "ranks": ranks}
