"""Stopping processes for good: SIGTERM, a short grace, then SIGKILL of the whole tree.

Every process a group starts carries ``LAUNCH_TRAIN_GROUP=<job dir>@<host>`` in its
environment (and ``LAUNCH_TRAIN_JOB_DIR=<job dir>`` from env.sh); ``sweep_group`` finds and kills any that escaped their process tree (a daemon that called
setsid, a child reparented to init), so nothing of a job outlives the launcher.
"""
from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Iterable

from launcher.job.rank_env import GROUP_MARKER_VAR, JOB_MARKER_VAR

if TYPE_CHECKING:
    import psutil

# psutil (~6 ms of CPU to import) is loaded by the functions that stop processes, not by the import:
# a group starts its ranks (the per-host agent before anything else) without it.


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (that still exist)."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def signal_group_and_tree(pid: int, sig: int, tree: Iterable[psutil.Process]) -> None:
    """Signal the process group led by ``pid`` (each rank is a session leader) and every known descendant."""
    import psutil

    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for proc in tree:
        try:
            proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def stop_trees(leaders: Iterable[int], grace: float) -> None:
    """SIGTERM every tree, wait up to ``grace`` s for all to go, then SIGKILL what is left."""
    trees = {pid: process_tree(pid) for pid in leaders}
    everything = [p for tree in trees.values() for p in tree]
    if not everything:
        return
    for pid, tree in trees.items():
        signal_group_and_tree(pid, signal.SIGTERM, tree)
    alive = wait_gone(everything, grace)
    # Children forked during the grace period are caught here too.
    late = {p.pid: p for pid in trees for p in process_tree(pid)}
    for proc in alive:
        late.setdefault(proc.pid, proc)
    for pid in trees:
        signal_group_and_tree(pid, signal.SIGKILL, late.values())
    wait_gone(list(late.values()), 5.0)


def _gone(proc: psutil.Process) -> bool:
    import psutil

    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (a zombie counts as exited); returns those still alive.

    Unlike psutil.wait_procs this never reaps: the launcher's own children must stay
    waitable by their subprocess.Popen, or their exit status would be lost.
    """
    import psutil

    alive = list(procs)
    deadline = time.monotonic() + timeout
    while alive:
        alive = [p for p in alive if not _gone(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    return alive


def group_marker(job_dir: str, host: str) -> str:
    return f"{job_dir}@{host}"


def job_processes(job_dir: str, exclude: Iterable[int] = (), *, var: str = JOB_MARKER_VAR) -> list[psutil.Process]:
    """Processes whose environment says they belong to the job in ``job_dir`` (``var`` = its value).

    Each process's /proc/<pid>/environ (what psutil.environ reads too; the keeper also needs procfs)
    is searched as bytes for ``var=value``: psutil parses every environment into a dict, and an agent's stop sweeps every process of its host
    (on a machine whose cores 64 loopback "hosts" share, 64 sweeps of every process cost ~4 s of CPU).
    """
    import psutil

    skip = {os.getpid(), *exclude}
    needle = f"\0{var}={job_dir}\0".encode(errors="surrogateescape")
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in skip:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as handle:
                data = handle.read()
        except OSError:  # gone, or not ours to read
            continue
        if needle in b"\0" + data + b"\0":  # one whole NUL-separated entry, wherever it stands
            try:
                found.append(psutil.Process(int(name)))
            except psutil.NoSuchProcess:
                continue
    return found


def sweep_group(job_dir: str, host: str) -> int:
    """SIGKILL whatever a group of this job started and is still running on this machine; returns how many."""
    import psutil

    stray = job_processes(group_marker(job_dir, host), var=GROUP_MARKER_VAR)
    for proc in stray:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    wait_gone(stray, 5.0)
    return len(stray)
