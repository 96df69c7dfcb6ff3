"""The transport to one remote host: an SSH connection carrying one agent (``python -m launcher.remote.agent``).

``AgentSession`` starts the agent on an SSH channel (or takes over the host's pre-flight
session, kept open for it: ``WaitingAgent``), sends it the host's files down that channel
first (launcher.remote.file_stream: one SSH session per host, no SFTP), turns its stdout into protocol events
(launcher.remote.protocol) on a queue, sends heartbeats and other lines, notes when the
agent was last heard from, and asks it to stop. The reading and writing of every host's
channel is done by one reader and one writer thread for all hosts
(launcher.remote.channel_hub), with non-blocking sends: a host that stops reading delays
only its own lines.
launcher.remote.group.RemoteHostGroup drives it for the supervisor.

A lost connection (the channel closes before the agent said ``done``) is an event
too (``{"event": "lost", ...}``). The reader catches only what a dying transport
raises (socket and SSH errors); a bug in handling a line is not disguised as a lost host.
"""
from __future__ import annotations

import collections
import json
import posixpath
import queue
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import paramiko

from launcher.remote.channel_hub import channel_hub
from launcher.remote.host_slice import PushedFile, files_for_host, ranks_by_host
from launcher.remote.protocol import decode_event
from launcher.remote.ssh import RemoteHost, SshOptions, connection, describe_ssh_error, run_on_each

if TYPE_CHECKING:
    from launcher.job.plan import Plan

# What reading from or writing to an SSH channel raises when the connection goes away.
TRANSPORT_ERRORS = (OSError, EOFError, socket.timeout, paramiko.SSHException)

AGENT_MODULE = "launcher.remote.agent"
DEFAULT_HEARTBEAT_S = 2.0
STDERR_KEEP_CHARS = 4000
READ_CHUNK = 65536
OUTBOX_LIMIT = 64  # lines for one agent not yet sent: a host this far behind is not reading


def agent_argv(job_dir: str, host_name: str, heartbeat_timeout_s: float, env: Optional[dict] = None,
               forward_ranks: Sequence[int] = (), job_file: Optional[str] = None,
               relay_file: Optional[str] = None) -> list[str]:
    """The agent's arguments (after ``python -m launcher.remote.agent``): it reads its files from stdin first."""
    words = ["--job-dir", job_dir, "--host", host_name, "--heartbeat-timeout", f"{heartbeat_timeout_s:g}",
             "--receive-files"]
    if job_file is not None:
        words += ["--job-file", job_file]
    if relay_file is not None:
        words += ["--relay", relay_file]
    if forward_ranks:
        words += ["--forward-lines", ",".join(str(rank) for rank in sorted(forward_ranks))]
    for key, value in sorted((env or {}).items()):
        words += ["--env", f"{key}={value}"]
    return words


def agent_command(remote_python: str, argv: Sequence[str]) -> str:
    """The shell command that runs the agent with ``argv`` (``agent_argv``) on the host (every word quoted)."""
    # exec: the agent is the session's process, so closing the channel reaches it directly.
    return "exec " + " ".join(shlex.quote(word) for word in (remote_python, "-m", AGENT_MODULE, *argv))


@dataclass(frozen=True)
class WaitingAgent:
    """A pre-flight session kept open (launcher.remote.preflight ``bootstrap``): its probe answered and
    it waits for an ``agent ARGS`` line to become the host's agent, in the same SSH session."""

    connection: Any
    channel: Any

    def take_channel(self) -> Optional[Any]:
        """Its channel while the probe still waits on it; None (the channel closed) once it gave up
        waiting (``bootstrap``'s wait ran out) or ended: the caller opens a session of its own."""
        if self.channel.closed or self.channel.eof_received:
            self.channel.close()
            return None
        return self.channel

    def close(self) -> None:
        self.connection.close()


class AgentSession:
    """One SSH connection to one host, carrying one agent."""

    def __init__(self, host: RemoteHost, options: SshOptions, job_dir: str, remote_python: str,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, config=None, plan_host: Optional[str] = None,
                 agent_env: Optional[dict] = None, forward_ranks: Sequence[int] = (), job_file: Optional[str] = None,
                 connect: Callable = connection, hub=None, relay_file: Optional[str] = None, events=None,
                 waiting: Optional[WaitingAgent] = None) -> None:
        """``connect(host, options, config)``: an unopened fabric-like Connection (a simulated one in bench/scale.py).
        ``waiting``: the host's pre-flight session, kept open to become its agent (then nothing is connected).

        ``relay_file``: the agent is a relay of a tree start (launcher.remote.relay) and reads its
        spec there; ``routes`` then maps every host below it to its RelayedSession. ``events``: where
        the agent's events go (a relay passes them up), else a queue ``drain`` reads. ``hub``: the
        channel hub to use (None: the process's).
        """
        if not posixpath.isabs(job_dir):
            raise ValueError(f"job dir {job_dir}: must be absolute (the same path on every host)")
        self.host = host
        self.plan_host = plan_host or host.host_name  # the host's name in job.json
        self.agent_env = dict(agent_env or {})
        self.forward_ranks = tuple(forward_ranks)
        self.job_file = job_file  # the host's job document (launcher.remote.host_slice), None: job.json
        self.relay_file = relay_file
        self.routes: dict = {}  # host index -> RelayedSession, for the hosts this agent's relay starts
        self.stop_sent = False
        self.options = options
        self.job_dir = job_dir
        self.remote_python = remote_python
        self.heartbeat_s = heartbeat_s
        self._waiting = waiting
        self.connection = waiting.connection if waiting is not None else connect(host, options, config)
        self.channel = None
        self.events = events if events is not None else queue.Queue()
        # Told of every event queued for drain() (the supervisor's wake-up: RemoteHostGroup.report_news_to).
        self.on_event: Optional[Callable[[dict], None]] = None
        self._passes_up = events is not None
        self.stderr_tail = ""
        self.finished = threading.Event()  # agent said "done", or the channel closed
        self.said_done = False
        self.last_heard = time.monotonic()  # any line from the agent (it says "alive" every second)
        # Reading and writing are the process's channel hub's (launcher.remote.channel_hub): one
        # reader and one writer for every host. Lines for the agent wait here; a host that stops
        # reading fills its SSH window, and only its own lines wait then, never a caller (the
        # heartbeat, the supervisor, Ctrl-C).
        self._outbox: "collections.deque[Optional[str]]" = collections.deque()
        self._outbox_lock = threading.Lock()
        self._pending = b""  # the part of a line the channel has not taken yet
        self._stdout = b""  # the agent's output after its last full line
        self._gave_up = False
        self._hub = hub
        self.write_limit_s = 30.0
        self.send_blocked_since: Optional[float] = None

    # -- set-up -------------------------------------------------------------------------
    def open(self) -> None:
        if self._waiting is not None:  # pre-flight's connection, open already
            self.connection.transport.set_keepalive(max(1, int(self.heartbeat_s)))
            return
        try:
            self.connection.open()
        except Exception as error:  # every way of not connecting becomes one clear line
            raise ConnectionError(describe_ssh_error(error, self.host, self.options)) from None
        # Keepalives make a dead peer visible to the transport instead of hanging on it.
        self.connection.transport.set_keepalive(max(1, int(self.heartbeat_s)))

    # -- running ------------------------------------------------------------------------
    def start(self, heartbeat_timeout_s: float, files: Sequence[PushedFile] = ()) -> None:
        """Start the agent and send it ``files`` (launcher.remote.file_stream) before any other line.

        The host's pre-flight session becomes the agent when it was kept (``waiting``): one SSH
        session per host. Transport errors (a dead channel, a host that takes no bytes for
        ``heartbeat_timeout_s``) are raised to the caller.
        """
        from launcher.remote.file_stream import encode_files

        argv = agent_argv(self.job_dir, self.plan_host, heartbeat_timeout_s, self.agent_env, self.forward_ranks,
                          self.job_file, self.relay_file)
        payload = encode_files(files)
        waiting, self._waiting = self._waiting, None
        kept = waiting.take_channel() if waiting is not None else None
        if kept is not None:
            self.channel = kept
            payload = b"agent " + json.dumps(argv).encode() + b"\n" + payload
        else:  # no pre-flight session, or it gave up waiting: a session of its own on the same connection
            self.channel = self.connection.transport.open_session(timeout=self.options.timeout_s)
            self.channel.exec_command(agent_command(self.remote_python, argv))
        # On the calling (pool) thread, before the hub reads or writes the channel.
        self.channel.settimeout(max(30.0, heartbeat_timeout_s))
        self.channel.sendall(payload)
        self.channel.settimeout(None)
        # A write that cannot go out for this long means the host stopped reading.
        self.write_limit_s = max(1.0, heartbeat_timeout_s)
        self._hub = self._hub or channel_hub()
        self._hub.add(self)

    def feed(self) -> bool:
        """What the channel has now, without blocking (the hub's reader calls it); False once it ended."""
        channel = self.channel
        try:
            while channel.recv_ready():
                self._stdout += channel.recv(READ_CHUNK)
            while channel.recv_stderr_ready():
                self.stderr_tail = (self.stderr_tail + channel.recv_stderr(READ_CHUNK).decode(errors="replace")
                                    )[-STDERR_KEEP_CHARS:]
        except TRANSPORT_ERRORS:  # torn down mid-read: like EOF
            return False
        if b"\n" in self._stdout:
            *lines, self._stdout = self._stdout.split(b"\n")
            for line in lines:
                event = decode_event(line.decode(errors="replace"))
                if event is None:
                    continue
                self.last_heard = time.monotonic()
                via = event.get("via")
                if via is not None:  # a host below this relay (launcher.remote.relay)
                    routed = self.routes.get(via) if isinstance(via, int) else None
                    if routed is not None:
                        routed.deliver(event)
                    elif self._passes_up:  # a relay's child that is a relay too: its hosts' events go up as they are
                        self.events.put(event)
                    continue
                if event["event"] == "done":
                    self.said_done = True
                self._queue(event)
        return not ((channel.eof_received or channel.closed) and not channel.recv_ready()
                    and not channel.recv_stderr_ready())

    def ended(self) -> None:
        """The channel ended (the hub's reader): "lost" unless the agent said "done"."""
        if self.said_done:
            self._end_routes(f"its relay {self.plan_host} finished first")
            self.finished.set()
            return
        # Wait briefly for the exit status (an agent that crashed says why on stderr), off the hub's thread.
        timer = threading.Timer(0.2, self._report_lost)
        timer.daemon = True
        timer.start()

    def _report_lost(self) -> None:
        reason = self.lost_reason()
        self._queue({"event": "lost", "host": self.host.name, "reason": reason})
        self._end_routes(f"lost its relay {self.plan_host}: {reason}")
        self.finished.set()

    def _queue(self, event: dict) -> None:
        self.events.put(event)
        if self.on_event is not None:
            self.on_event(event)

    def _end_routes(self, reason: str) -> None:
        """The relay is gone: every host below it that has not said "done" is cut off (not its own fault)."""
        for routed in list(self.routes.values()):
            routed.relay_lost(reason, self.plan_host)

    def send(self, line: Optional[str]) -> bool:
        """Queue a line for the agent (None: close our side); never blocks. False once the channel is gone."""
        if self.channel is None or self.channel.closed or self.finished.is_set() or self._gave_up:
            return False
        with self._outbox_lock:
            if len(self._outbox) >= OUTBOX_LIMIT + 2 * len(self.routes):  # a relay carries its hosts' lines
                return line == "ping"  # the host is not reading: heartbeats can wait, the silence is noticed
            self._outbox.append(line)
        self._hub.wake_writer(self)
        return True

    def write_some(self, now: float) -> bool:
        """Send what the channel takes now, without blocking (the hub's writer); True while lines wait."""
        channel = self.channel
        while True:
            if not self._pending:
                with self._outbox_lock:
                    if not self._outbox:
                        self.send_blocked_since = None
                        return False
                    line = self._outbox.popleft()
                if line is None:
                    try:
                        channel.shutdown_write()
                    except TRANSPORT_ERRORS:
                        pass
                    continue
                self._pending = (line + "\n").encode()
            try:
                if channel.closed:
                    raise EOFError("channel closed")
                if not channel.send_ready():
                    self.send_blocked_since = self.send_blocked_since or now
                    if now - self.send_blocked_since > self.write_limit_s:
                        raise TimeoutError("the host stopped reading")
                    return True
                sent = channel.send(self._pending)
            except TRANSPORT_ERRORS:  # a host not reading for too long, or a dead channel: the reader reports the loss
                self._gave_up = True
                self.send_blocked_since = None
                self._pending = b""
                with self._outbox_lock:
                    self._outbox.clear()
                return False
            self._pending = self._pending[sent:]
            self.send_blocked_since = None if not self._pending else (self.send_blocked_since or now)

    def silent_for(self) -> float:
        """Seconds since the agent was last heard from."""
        return time.monotonic() - self.last_heard

    def lost_reason(self) -> str:
        transport = self.connection.transport
        if self.channel is not None and self.channel.exit_status_ready():
            status = self.channel.recv_exit_status()
            if status != -1:  # -1: the session closed without an exit status
                last = (self.stderr_tail.strip().splitlines() or [""])[-1]
                return f"agent exited with status {status} before finishing" + (f": {last}" if last else "")
        if transport is None or not transport.is_active():
            return "SSH connection lost"
        return "SSH session closed by the host without an exit status (connection cut or sshd session killed)"

    def drain(self) -> list[dict]:
        return drain_queue(self.events)

    def stop(self) -> None:
        """Ask the agent to stop its ranks; closing stdin says the same to an agent that misses the line."""
        self.stop_sent = True
        self.send("stop")
        self.send(None)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop (if running), wait for the agent to finish, drop the connection (never blocks for long)."""
        if self.channel is not None:
            self.stop()
            self.finished.wait(timeout_s)
            if self._hub is not None:
                self._hub.remove(self)  # before the channel closes: closing it frees the fd the hub watches
        self.connection.close()


def drain_queue(events: "queue.Queue[dict]") -> list[dict]:
    """What the queue holds now, without waiting."""
    if events.empty():  # the common case (a once-a-second sweep of a quiet host): no exception raised
        return []
    out = []
    while True:
        try:
            out.append(events.get_nowait())
        except queue.Empty:
            return out


def push_job_files(plan: "Plan", hosts: Sequence[RemoteHost], options: SshOptions, remote_python: str,
                   connect: Callable = connection, waiting: Optional[dict] = None) -> None:
    """Send each host its part of the job dir, ``options.parallel`` hosts at a time (hosts whose ranks
    someone else starts: mpirun's): down its kept pre-flight session (``waiting``, by host name: it
    runs the receiver) or a session of its own running ``python -m launcher.remote.file_stream``.
    OSError with one line for the first host that failed."""
    from launcher.remote.file_stream import encode_files
    from launcher.remote.ssh import fabric_config, run_command

    by_host = ranks_by_host(plan)
    index_of = {entry.host.name: index for index, entry in enumerate(plan.hosts)}
    job_dir = str(plan.spec.job_dir)
    config = fabric_config(options)
    # Files read and connections made in this thread (fabric's Connection() writes to the shared config).
    work = []
    for remote in hosts:
        files = files_for_host(plan, remote.host_name, index_of[remote.host_name], by_host.get(remote.host_name, ()),
                               with_job_document=False)
        kept = (waiting or {}).pop(remote.host_name, None)
        work.append((remote, encode_files(files), kept, kept.connection if kept else connect(remote, options, config)))

    def send(item) -> None:
        remote, payload, kept, conn = item
        where = f"{remote.host_name}:{job_dir}"
        timeout_s = max(30.0, options.timeout_s * 3)
        try:
            channel = kept.take_channel() if kept is not None else None
            if channel is not None:
                done = run_command(conn, None, timeout_s, channel=channel,
                                   stdin=b"receive " + json.dumps(["--job-dir", job_dir]).encode() + b"\n" + payload)
            else:
                if kept is None:
                    try:
                        conn.open()
                    except Exception as error:  # every way of not connecting becomes one clear line
                        raise ConnectionError(describe_ssh_error(error, remote, options)) from None
                command = " ".join(shlex.quote(word) for word in
                                   (remote_python, "-m", "launcher.remote.file_stream", "--job-dir", job_dir))
                done = run_command(conn, "exec " + command, timeout_s, stdin=payload)
        except OSError:
            raise
        except TRANSPORT_ERRORS as error:
            raise OSError(f"cannot copy the job files to {where}: {type(error).__name__}: {error}") from None
        finally:
            conn.close()
        if done.exited != 0:
            last = (done.stderr.strip().splitlines() or [f"exit status {done.exited}"])[-1]
            raise OSError(f"cannot copy the job files to {where}: {last}")

    outcome = run_on_each(work, send, key=lambda item: item[0].host_name, parallel=options.parallel)
    for remote in hosts:
        error = outcome.failed.get(remote.host_name)
        if error is not None:
            raise error if isinstance(error, OSError) else OSError(f"{remote.host_name}: {error}")
