"""The keeper: one small process per rank that makes sure nothing the rank started outlives it.

    python -S launcher/run/keeper.py COMMAND [ARG...]

It runs COMMAND as its child and is a child subreaper (PR_SET_CHILD_SUBREAPER): every
process below it that is orphaned -- a daemon that double-forked, called setsid, and
cleared its environment with `env -i`, so no process group, session or marker
variable leads back to the rank -- is re-parented to the keeper instead of to init.
So the keeper always knows the rank's whole tree, and:

  * when COMMAND ends, every remaining descendant gets SIGTERM, then (after
    GRACE_S) SIGKILL, is reaped, and the keeper exits as COMMAND did (same exit code,
    or killed by the same signal), so the launcher sees the rank's own status;
  * SIGTERM / SIGINT / SIGHUP to the keeper are passed to COMMAND and then handled as
    above;
  * SIGUSR1 (launch-train's "save a checkpoint and stop", before a preemption) is passed to
    COMMAND only: the rank decides when it is done;
  * when the launcher dies, even by SIGKILL, the kernel sends the keeper SIGTERM
    (PR_SET_PDEATHSIG), and the same clean-up runs.

Standard library only, and started with -S: it must cost milliseconds, not an import
of the launcher package, on every rank of every host. The launcher starts it from its cached
bytecode (launcher.run.local.popen_script); its signal functions come from ``_signal``, the
C module under ``signal``: the same functions, without the enum classes whose import was a
third of the keeper's CPU (~5 of ~18 ms).
"""
from __future__ import annotations

import ctypes
import os
import sys
import time

try:
    import _signal as signal
except ImportError:  # not CPython
    import signal  # type: ignore[no-redef]

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 2.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SAVE_SIGNAL = signal.SIGUSR1


def _prctl(option: int, value: int) -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children_of(pid: int) -> list[int]:
    """Direct children of pid, from /proc (no psutil: the keeper imports nothing)."""
    found = []
    try:
        # /proc/PID/task/TID/children lists each thread's children; the keeper is single-threaded.
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            found = [int(p) for p in handle.read().split()]
    except OSError:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                    if int(fields[1]) == pid:
                        found.append(int(entry))
                except (OSError, IndexError, ValueError):
                    continue
    return found


def descendants(pid: int) -> list[int]:
    out, pending = [], [pid]
    while pending:
        for child in children_of(pending.pop()):
            if child not in out:
                out.append(child)
                pending.append(child)
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap_all() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def clear_tree(grace: float = GRACE_S) -> None:
    """SIGTERM everything below the keeper, wait up to `grace`, SIGKILL the rest, reap all."""
    me = os.getpid()
    pids = descendants(me)
    if not pids:
        _reap_all()
        return
    _signal_all(pids, signal.SIGCONT)  # a stopped process would not act on SIGTERM
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap_all()
        if not descendants(me):
            return
        time.sleep(0.02)
    # Whatever forked meanwhile is below us too (subreaper): kill until nothing is left.
    for _ in range(50):
        pids = descendants(me)
        if not pids:
            break
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.02)
        _reap_all()
    _reap_all()


def _exit_like(status: int) -> None:
    """Leave as the command did: its exit code, or death by its signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL and SIGSTOP have no handler to reset
        os.kill(os.getpid(), sig)
        time.sleep(1)  # a signal whose default is to be ignored falls through to this
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _reap(child: int) -> int | None:
    """Reap every child that has ended (the command, adopted orphans); the command's status if it ended."""
    status = None
    while True:
        try:
            pid, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return status if status is not None else 1 << 8
        if pid == 0:
            return status
        if pid == child:
            status = code


def _wait_for(child: int, watched: set[int]) -> int:
    """The command's wait status. A stop signal is passed on to it; GRACE_S later it is killed.

    The signals are blocked and taken with sigtimedwait, never by a handler: a handler runs
    while waitpid() is blocked and Python then resumes the same wait, so the grace step was
    only reached once some child ended -- a command ignoring SIGTERM kept everything alive.
    """
    deadline = None
    while True:
        status = _reap(child)
        if status is not None:
            return status
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            _signal_all([child], signal.SIGKILL)
            return os.waitpid(child, 0)[1]
        info = signal.sigtimedwait(watched, 3600.0 if left is None else left)
        if info is not None and info.si_signo == SAVE_SIGNAL:
            _signal_all([child], SAVE_SIGNAL)  # the rank decides when it has saved; no grace starts
        elif info is not None and info.si_signo in FORWARDED:
            _signal_all([child], signal.SIGCONT)
            _signal_all([child], info.si_signo)
            if deadline is None:
                deadline = time.monotonic() + GRACE_S


def main(argv: list[str]) -> None:
    if not argv:
        sys.stderr.write("keeper: no command\n")
        os._exit(2)
    parent = os.getppid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    watched = {*FORWARDED, SAVE_SIGNAL, signal.SIGCHLD}
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the launcher died before PDEATHSIG was armed
        os._exit(128 + signal.SIGTERM)
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        try:
            os.execvp(argv[0], argv)
        except OSError as err:
            sys.stderr.write(f"keeper: cannot run {argv[0]}: {err.strerror}\n")
            os._exit(127)
    status = _wait_for(child, watched)
    clear_tree()
    for sig in FORWARDED:  # a stop signal still pending must not end the keeper before it exits like the command
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
