"""The transport to one remote host: an SSH connection carrying one agent (``python -m launcher.remote.agent``).

``AgentSession`` pushes the job's files to the host over SFTP (atomically: temp name,
then rename, so hosts that share the job dir's file system see whole files), starts
the agent on an SSH channel, turns its stdout into protocol events
(launcher.remote.protocol) on a queue, sends heartbeats and other lines through one sender
thread (a host that stops reading blocks only that thread; no lock is held across a write),
notes when the agent was last heard from, and asks it to stop.
launcher.remote.group.RemoteHostGroup drives it for the supervisor.

A lost connection (the channel closes before the agent said ``done``) is an event
too (``{"event": "lost", ...}``). The reader threads catch only what a dying transport
raises (socket and SSH errors); a bug in handling a line is not disguised as a lost host.
"""
from __future__ import annotations

import posixpath
import queue
import secrets
import shlex
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

import paramiko

from launcher.remote.host_slice import PushedFile, files_for_host, ranks_by_host
from launcher.remote.protocol import decode_event
from launcher.remote.ssh import RemoteHost, SshOptions, connection, describe_ssh_error, open_sftp, run_on_each

if TYPE_CHECKING:
    from launcher.job.plan import Plan

# What reading from or writing to an SSH channel raises when the connection goes away.
TRANSPORT_ERRORS = (OSError, EOFError, socket.timeout, paramiko.SSHException)

AGENT_MODULE = "launcher.remote.agent"
DEFAULT_HEARTBEAT_S = 2.0
STDERR_KEEP_CHARS = 4000


def agent_command(remote_python: str, job_dir: str, host_name: str, heartbeat_timeout_s: float,
                  env: Optional[dict] = None, forward_ranks: Sequence[int] = (), job_file: Optional[str] = None) -> str:
    """The shell command that runs the agent on the host (every word quoted)."""
    words = [remote_python, "-m", AGENT_MODULE, "--job-dir", job_dir, "--host", host_name,
             "--heartbeat-timeout", f"{heartbeat_timeout_s:g}"]
    if job_file is not None:
        words += ["--job-file", job_file]
    if forward_ranks:
        words += ["--forward-lines", ",".join(str(rank) for rank in sorted(forward_ranks))]
    for key, value in sorted((env or {}).items()):
        words += ["--env", f"{key}={value}"]
    # exec: the agent is the session's process, so closing the channel reaches it directly.
    return f"cd {shlex.quote(job_dir)} && exec " + " ".join(shlex.quote(word) for word in words)


class AgentSession:
    """One SSH connection to one host, carrying one agent."""

    def __init__(self, host: RemoteHost, options: SshOptions, job_dir: str, remote_python: str,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, config=None, plan_host: Optional[str] = None,
                 agent_env: Optional[dict] = None, forward_ranks: Sequence[int] = (), job_file: Optional[str] = None,
                 connect: Callable = connection) -> None:
        """``connect(host, options, config)``: an unopened fabric-like Connection (a simulated one in bench/scale.py)."""
        if not posixpath.isabs(job_dir):
            raise ValueError(f"job dir {job_dir}: must be absolute (the same path on every host)")
        self.host = host
        self.plan_host = plan_host or host.host_name  # the host's name in job.json
        self.agent_env = dict(agent_env or {})
        self.forward_ranks = tuple(forward_ranks)
        self.job_file = job_file  # the host's job document (launcher.remote.host_slice), None: job.json
        self.options = options
        self.job_dir = job_dir
        self.remote_python = remote_python
        self.heartbeat_s = heartbeat_s
        self.connection = connect(host, options, config)
        self.channel = None
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.stderr_tail = ""
        self.finished = threading.Event()  # agent said "done", or the channel closed
        self.said_done = False
        self.last_heard = time.monotonic()  # any line from the agent (it says "alive" every second)
        self._threads: list[threading.Thread] = []
        # Lines for the agent go through one sender thread: a host that stops reading fills the
        # SSH window and blocks sendall(); only that thread waits then, never a caller (the
        # heartbeat, the supervisor, Ctrl-C), and no lock is held across the blocking write.
        self._outbox: "queue.Queue[Optional[str]]" = queue.Queue(maxsize=64)
        self.send_blocked_since: Optional[float] = None

    # -- set-up -------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self.connection.open()
        except Exception as error:  # every way of not connecting becomes one clear line
            raise ConnectionError(describe_ssh_error(error, self.host, self.options)) from None
        # Keepalives make a dead peer visible to the transport instead of hanging on it.
        self.connection.transport.set_keepalive(max(1, int(self.heartbeat_s)))

    def push(self, files: Sequence[PushedFile]) -> None:
        """Write ``files`` under the job dir on the host, each atomically."""
        sftp = open_sftp(self.connection, self.host.name)
        made: set[str] = set()
        try:
            for item in files:
                target = posixpath.join(self.job_dir, item.path)
                self._makedirs(sftp, posixpath.dirname(target), made)
                # A name of its own: hosts sharing the job dir's file system may push the same file.
                temp = posixpath.join(posixpath.dirname(target),
                                      f".{posixpath.basename(target)}.push-{secrets.token_hex(4)}")
                with sftp.open(temp, "w") as handle:
                    handle.write(item.text.encode())
                sftp.chmod(temp, 0o755 if item.executable else 0o644)
                sftp.posix_rename(temp, target)
        finally:
            sftp.close()

    @staticmethod
    def _makedirs(sftp, path: str, made: set[str]) -> None:
        if path in made or path in ("", "/"):
            return
        try:
            sftp.stat(path)
        except FileNotFoundError:
            AgentSession._makedirs(sftp, posixpath.dirname(path), made)
            try:
                sftp.mkdir(path)
            except OSError:
                sftp.stat(path)  # made meanwhile by another session on a shared file system
        made.add(path)

    # -- running ------------------------------------------------------------------------
    def start(self, heartbeat_timeout_s: float) -> None:
        transport = self.connection.transport
        self.channel = transport.open_session(timeout=self.options.timeout_s)
        self.channel.exec_command(agent_command(self.remote_python, self.job_dir, self.plan_host, heartbeat_timeout_s,
                                                 self.agent_env, self.forward_ranks, self.job_file))
        # A write that cannot go out for this long means the host stopped reading.
        self.channel.settimeout(max(1.0, heartbeat_timeout_s))
        for target in (self._read_events, self._read_stderr, self._send_heartbeats, self._send_lines):
            thread = threading.Thread(target=target, daemon=True, name=f"agent-{self.host.name}-{target.__name__}")
            thread.start()
            self._threads.append(thread)

    def _read_events(self) -> None:
        for line in _lines_until_transport_ends(self.channel.makefile("r")):
            event = decode_event(line)
            if event is None:
                continue
            self.last_heard = time.monotonic()
            if event["event"] == "done":
                self.said_done = True
            self.events.put(event)
        if not self.said_done:
            # Wait briefly for the exit status: an agent that crashed says why on stderr.
            time.sleep(0.2)
            self.events.put({"event": "lost", "host": self.host.name, "reason": self.lost_reason()})
        self.finished.set()

    def _read_stderr(self) -> None:
        for line in _lines_until_transport_ends(self.channel.makefile_stderr("r")):
            self.stderr_tail = (self.stderr_tail + line)[-STDERR_KEEP_CHARS:]

    def _send_heartbeats(self) -> None:
        while not self.finished.wait(self.heartbeat_s):
            if not self.send("ping"):
                return

    def send(self, line: Optional[str]) -> bool:
        """Queue a line for the agent (None: close our side); never blocks. False once the channel is gone."""
        if self.channel is None or self.channel.closed or self.finished.is_set():
            return False
        try:
            self._outbox.put_nowait(line)
        except queue.Full:
            return line == "ping"  # the sender is stuck: heartbeats can wait, the silence is noticed
        return True

    def _send_lines(self) -> None:
        while True:
            try:
                line = self._outbox.get(timeout=0.5)
            except queue.Empty:
                if self.finished.is_set():
                    return
                continue
            self.send_blocked_since = time.monotonic()
            try:
                if line is None:
                    self.channel.shutdown_write()
                else:
                    self.channel.sendall((line + "\n").encode())
            except TRANSPORT_ERRORS:  # a timeout (host not reading) or a dead channel: the reader reports the loss
                self.send_blocked_since = None
                return
            self.send_blocked_since = None

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
        out = []
        while True:
            try:
                out.append(self.events.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        """Ask the agent to stop its ranks; closing stdin says the same to an agent that misses the line."""
        self.send("stop")
        self.send(None)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop (if running), wait for the agent to finish, drop the connection (never blocks for long)."""
        if self.channel is not None:
            self.stop()
            self.finished.wait(timeout_s)
        # Closing the transport wakes every thread still blocked on the socket.
        self.connection.close()
        for thread in self._threads:
            thread.join(timeout=1.0)


def _lines_until_transport_ends(stream) -> Iterator[str]:
    """The stream's lines (decoded); a connection torn down mid-read ends them like EOF."""
    try:
        for raw in stream:
            yield raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    except TRANSPORT_ERRORS:
        return


def push_job_files(plan: "Plan", hosts: Sequence[RemoteHost], options: SshOptions, connect: Callable = connection) -> None:
    """Copy each host's part of the job dir to it, ``options.parallel`` hosts at a time (hosts whose
    ranks someone else starts: mpirun's). OSError with one line for the first host that failed."""
    by_host = ranks_by_host(plan)
    index_of = {entry.host.name: index for index, entry in enumerate(plan.hosts)}

    def push_one(remote: RemoteHost) -> None:
        session = AgentSession(remote, options, str(plan.spec.job_dir), "", plan_host=remote.host_name, connect=connect)
        try:
            session.open()
            session.push(files_for_host(plan, remote.host_name, index_of[remote.host_name],
                                        by_host.get(remote.host_name, ()), with_job_document=False))
        except OSError:
            raise
        except TRANSPORT_ERRORS as error:  # SFTP refusals: permissions, full disk, ...
            raise OSError(f"cannot copy the job files to {remote.host_name}:{plan.spec.job_dir}: {error}") from None
        finally:
            session.connection.close()

    outcome = run_on_each(list(hosts), push_one, key=lambda remote: remote.host_name, parallel=options.parallel)
    for remote in hosts:
        error = outcome.failed.get(remote.host_name)
        if error is not None:
            raise error if isinstance(error, OSError) else OSError(f"{remote.host_name}: {error}")
