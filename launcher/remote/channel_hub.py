"""One reader and one writer for every agent's SSH channel, instead of four threads per host.

A session per host with its own reader, stderr reader, heartbeat and sender threads was
5 threads per host with paramiko's transport (5,121 at 1,024 hosts: past a common 4,096
pids limit; FIELD_NOTES "Many hosts"). Here:

  - the reader waits on every channel at once (``selectors`` over paramiko's ``fileno()``,
    a pipe that becomes readable when stdout or stderr has data or the channel ends), reads
    what is there without blocking and hands it to its session (``AgentSession.feed``);
  - the writer sends queued lines with non-blocking sends, and one heartbeat to every agent
    at once: a host that stops reading fills its SSH window, and only its own lines wait
    (``send_ready`` is false), never another host's, a caller, or Ctrl-C. A write that has
    waited longer than the session's limit is given up, and its session says how long it was
    blocked.

The hub is one per process, started on first use; its threads are daemons that sleep when
no channel is registered. Each session still has paramiko's transport thread (one per
connection): above --ssh-tree-width hosts a tree start (launcher.remote.tree) keeps those to
the tree's first tier.
"""
from __future__ import annotations

import os
import resource
import selectors
import threading
import time
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from launcher.remote.session import AgentSession

# The writer looks at waiting hosts this often when some cannot take bytes (a full window).
WRITE_RETRY_S = 0.05
# Open files per connected host: paramiko's socket and the two ends of its channel's pipe.
FDS_PER_HOST = 3
# For everything else the controller opens (logs, job files, the pool's connections being set up).
FDS_RESERVE = 256


def ensure_fd_budget(hosts: int) -> None:
    """Raise this process's soft open-files limit to what ``hosts`` connections need, up to the hard limit.

    A default soft limit of 1,024 would otherwise end a start of ~300 hosts with "Too many open
    files" half-way. ValueError (one line) when even the hard limit is too low.
    """
    needed = hosts * FDS_PER_HOST + FDS_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ValueError(f"--hosts: {hosts} hosts need about {needed} open files, and this process may open "
                         f"at most {hard} (ulimit -Hn): raise the limit, or start from a host that allows more")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class ChannelHub:
    def __init__(self, name: str = "ssh-hub") -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._sessions: set["AgentSession"] = set()
        self._fds: dict["AgentSession", int] = {}
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)  # a full wake pipe already wakes the reader
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        self._to_write = threading.Condition()
        self._dirty: set["AgentSession"] = set()  # sessions with lines waiting to be sent
        self._reader = threading.Thread(target=self._read_forever, daemon=True, name=f"{name}-reader")
        self._writer = threading.Thread(target=self._write_forever, daemon=True, name=f"{name}-writer")
        self._reader.start()
        self._writer.start()

    # -- registration ------------------------------------------------------------------------
    def add(self, session: "AgentSession") -> None:
        with self._lock:
            self._sessions.add(session)
            self._fds[session] = session.channel.fileno()
            self._selector.register(self._fds[session], selectors.EVENT_READ, session)
        self._wake_reader()  # it re-reads its registrations

    def remove(self, session: "AgentSession") -> None:
        """Stop watching the session's channel (before the channel is closed: closing frees its fd)."""
        with self._lock:
            if session not in self._sessions:
                return
            self._sessions.discard(session)
            # The fd noted at add(): asking a closed paramiko channel again would make a new pipe.
            self._selector.unregister(self._fds.pop(session))
        self._wake_reader()

    def _wake_reader(self) -> None:
        try:
            os.write(self._wake_write, b"x")
        except BlockingIOError:
            pass

    def wake_writer(self, session: Optional["AgentSession"] = None) -> None:
        """``session`` has lines to send (None: look at the heartbeats)."""
        with self._to_write:
            if session is not None:
                self._dirty.add(session)
            self._to_write.notify()

    # -- the two loops -----------------------------------------------------------------------
    def _read_forever(self) -> None:
        while True:
            ready = self._selector.select(timeout=1.0)
            for key, _mask in ready:
                if key.data is None:
                    try:
                        os.read(self._wake_read, 4096)
                    except BlockingIOError:
                        pass
                    continue
                session: "AgentSession" = key.data
                if not session.feed():  # the channel ended: nothing more will come
                    self.remove(session)
                    session.ended()

    def _write_forever(self) -> None:
        next_ping = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_ping:
                # One heartbeat for every agent at once: waking per host would cost a wake-up per host.
                with self._lock:
                    sessions = list(self._sessions)
                for session in sessions:
                    session.send("ping")
                next_ping = now + min((session.heartbeat_s for session in sessions), default=1.0)
            with self._to_write:
                dirty, self._dirty = self._dirty, set()
            still = {session for session in dirty if session.write_some(now)}
            with self._to_write:
                self._dirty |= still
                if not self._dirty:
                    self._to_write.wait(max(0.0, next_ping - time.monotonic()))
                elif still == self._dirty:  # only hosts that cannot take bytes now: look again soon
                    self._to_write.wait(min(WRITE_RETRY_S, max(0.0, next_ping - time.monotonic())))


_hub: Optional[ChannelHub] = None
_hub_lock = threading.Lock()


def channel_hub() -> ChannelHub:
    """The process's hub, started on first use."""
    global _hub
    with _hub_lock:
        if _hub is None:
            _hub = ChannelHub()
        return _hub
