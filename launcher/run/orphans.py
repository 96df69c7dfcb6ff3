"""The launcher and the remote agent as child subreapers: nothing below them can slip away to init.

Each rank already runs under its keeper (keeper.py), which catches what the rank leaves
behind. What could still escape is what a keeper leaves when it is itself killed with
SIGKILL at the end of a stop: with PR_SET_CHILD_SUBREAPER those orphans become children
of the launcher (or agent) instead of init, and ``kill_leftover_children`` -- called once
every group is closed, when the process has no child it still needs -- kills and reaps
them. Only for the processes that own a whole job (the launch-train CLI, the agent),
never inside a library call: a test runner or another program calling ``launch()`` keeps
its own process semantics.
"""
from __future__ import annotations

import ctypes
import os
import signal

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Orphans below this process become its children (Linux); False where that is not possible."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def kill_leftover_children(timeout_s: float = 5.0) -> int:
    """SIGKILL every remaining descendant of this process and reap its children; returns how many there were."""
    import psutil  # at the end only: the agent's start does without it

    try:
        leftovers = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for proc in leftovers:
        try:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(leftovers, timeout=timeout_s)
    while True:  # reap adopted orphans nobody else waits for
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    return len(leftovers)
