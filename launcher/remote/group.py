"""A remote host's ranks, driven through an agent over SSH (``python -m launcher.remote.agent``).

``AgentSession`` is the transport: it pushes the job's files to the host over SFTP
(atomically: temp name, then rename, so hosts that share the job dir's file system
see whole files), starts the agent on an SSH channel, turns its stdout into event
dicts on a queue, sends heartbeats, and asks it to stop. ``RemoteHostGroup`` (below)
is the host group the supervisor drives, the same abstract base as the local one.

A lost connection (the channel closes before the agent said ``done``) is an event
too (``{"event": "lost", ...}``): the supervisor stops the job and reports it; the
agent on the far side sees its stdin close (or its heartbeats stop) and stops its
ranks by itself.
"""
from __future__ import annotations

import os
import posixpath
import queue
import secrets
import shlex
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from launcher.remote.agent import decode_event
from launcher.run.failures import RankExit
from launcher.run.group import ProcessGroup
from launcher.run.mpirun import MpirunGroup
from launcher.remote.ssh import RemoteHost, SshOptions, connection, describe_ssh_error, open_sftp, run_on_each

if TYPE_CHECKING:
    from launcher.job.plan import Plan
    from launcher.job.render import RenderedFile

AGENT_MODULE = "launcher.remote.agent"
DEFAULT_HEARTBEAT_S = 2.0
STDERR_KEEP_CHARS = 4000
# An agent says "alive" every second: one this long quiet is not waited for when stopping.
QUIET_HOST_S = 3.0
# py-spy has 20 s per process, all of a host's ranks in parallel.
STACKS_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class PushedFile:
    """A file for the host's copy of the job dir; ``path`` relative to the job dir."""

    path: str
    text: str
    executable: bool = False

    def __post_init__(self) -> None:
        if posixpath.isabs(self.path) or ".." in self.path.split("/"):
            raise ValueError(f"pushed file {self.path}: must stay inside the job directory")


def agent_command(remote_python: str, job_dir: str, host_name: str, heartbeat_timeout_s: float,
                  env: Optional[dict] = None, forward_ranks: Sequence[int] = ()) -> str:
    """The shell command that runs the agent on the host (every word quoted)."""
    words = [remote_python, "-m", AGENT_MODULE, "--job-dir", job_dir, "--host", host_name,
             "--heartbeat-timeout", f"{heartbeat_timeout_s:g}"]
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
                 agent_env: Optional[dict] = None, forward_ranks: Sequence[int] = ()) -> None:
        if not posixpath.isabs(job_dir):
            raise ValueError(f"job dir {job_dir}: must be absolute (the same path on every host)")
        self.host = host
        self.plan_host = plan_host or host.host_name  # the host's name in job.json
        self.agent_env = dict(agent_env or {})
        self.forward_ranks = tuple(forward_ranks)
        self.options = options
        self.job_dir = job_dir
        self.remote_python = remote_python
        self.heartbeat_s = heartbeat_s
        self.connection = connection(host, options, config)
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
                                                 self.agent_env, self.forward_ranks))
        # A write that cannot go out for this long means the host stopped reading.
        self.channel.settimeout(max(1.0, heartbeat_timeout_s))
        for target in (self._read_events, self._read_stderr, self._send_heartbeats, self._send_lines):
            thread = threading.Thread(target=target, daemon=True, name=f"agent-{self.host.name}-{target.__name__}")
            thread.start()
            self._threads.append(thread)

    def _read_events(self) -> None:
        stream = self.channel.makefile("r")
        try:
            for raw in stream:
                line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
                event = decode_event(line)
                if event is None:
                    continue
                self.last_heard = time.monotonic()
                if event["event"] == "done":
                    self.said_done = True
                self.events.put(event)
        except Exception:  # a connection torn down mid-read ends the stream like EOF
            pass
        if not self.said_done:
            # Wait briefly for the exit status: an agent that crashed says why on stderr.
            time.sleep(0.2)
            self.events.put({"event": "lost", "host": self.host.name, "reason": self.lost_reason()})
        self.finished.set()

    def _read_stderr(self) -> None:
        stream = self.channel.makefile_stderr("r")
        try:
            for raw in stream:
                line = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
                self.stderr_tail = (self.stderr_tail + line)[-STDERR_KEEP_CHARS:]
        except Exception:  # same as above: the stream ends with the connection
            pass

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
            except Exception:  # a timeout (host not reading) or a dead channel: the reader reports the loss
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


def files_for_host(plan: "Plan", rendered: Sequence["RenderedFile"], host: str, job_json: str) -> list[PushedFile]:
    """What ``host`` needs of the job dir: its ranks' scripts, the scheduler's if it runs there,
    the shared files (rank table, hostfile), and job.json last-but-not-least (the agent reads it)."""
    ranks = plan.ranks if (plan.spec.mode == "mpirun" and plan.hosts[0].host.name == host) else plan.ranks_on(host)
    own = {rank.log_dir for rank in ranks}
    if plan.scheduler is not None and plan.scheduler.host == host:
        own.add(plan.scheduler.log_dir)
    files = []
    for item in rendered:
        top = item.path.split("/", 1)[0]
        if "/" not in item.path or top in own:
            files.append(PushedFile(item.path, item.text, item.executable))
    files.append(PushedFile("job.json", job_json))
    return files


class RemoteHostGroup(ProcessGroup):
    """The ranks of one remote host, run by an agent there; the supervisor drives it like any group."""

    logs_are_local = False  # lines, tails and exits arrive as agent events

    def __init__(self, plan: "Plan", host: str, remote: RemoteHost, options: SshOptions, remote_python: str,
                 *, heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                 heartbeat_timeout_s: float = 30.0, start_timeout_s: float = 60.0, config=None,
                 push_also: Sequence[RemoteHost] = (), agent_env: Optional[dict] = None) -> None:
        mpirun_here = plan.spec.mode == "mpirun" and plan.hosts[0].host.name == host
        super().__init__(plan, host, plan.ranks if mpirun_here else plan.ranks_on(host))
        self.push_also = list(push_also)  # hosts that only need the files (mpirun starts their ranks)
        self.has_scheduler = plan.scheduler is not None and plan.scheduler.host == host
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.start_timeout_s = start_timeout_s
        # The --tee ranks of this host send every log line; the others only their progress.
        forward = sorted(set(self.ranks) & set(plan.spec.tee))
        self.session = AgentSession(remote, options, str(self.job_dir), remote_python, heartbeat_s, config,
                                    plan_host=host, agent_env=agent_env, forward_ranks=forward)
        self._pending: list[RankExit] = []
        self._seen: set[int] = set()
        self._lines: list[tuple[int, str]] = []
        self._tails: dict[int, str] = {}
        self._helper_message: Optional[str] = None
        self._helper_finished = not self.has_scheduler
        self._problem: Optional[str] = None  # lost connection or agent error
        self._agent_started = False
        self._stop_sent = False
        self._launch_attempted = False
        self._launch_error: Optional[BaseException] = None
        self._stacks_answer: Optional[dict] = None
        # The remote groups of one attempt: the supervisor closes groups one after the other,
        # so the first close() asks every agent to stop at once and the job stops in one grace period.
        self.siblings: list[RemoteHostGroup] = [self]

    # -- events -------------------------------------------------------------------------
    def _pump(self) -> None:
        for event in self.session.drain():
            self._handle(event)

    def _handle(self, event: dict) -> None:
        """One agent event, in the order the agent sent them."""
        kind = event["event"]
        if kind == "exited":
            rank = int(event["rank"])
            self._tails[rank] = event.get("tail") or ""
            if rank in self._seen or rank not in self.ranks:
                return
            self._seen.add(rank)
            self._pending.append(RankExit(
                rank=rank, host=self.rank_host(rank), exit_code=event.get("code"), signal=event.get("signal"),
                started=event.get("started"), ended=event.get("ended"), duration_s=event.get("duration_s"),
                stopped_by_launcher=bool(event.get("stopped")),
            ))
        elif kind in ("progress", "line"):
            self._lines.append((int(event["rank"]), str(event.get("line", ""))))
        elif kind == "helper":
            self._helper_message = event.get("problem") or self._helper_message
            self._helper_finished = self._helper_finished or bool(event.get("done"))
        elif kind == "stacks":
            self._stacks_answer = event.get("ranks") if isinstance(event.get("ranks"), dict) else {}
        elif kind == "error":
            self._problem = self._problem or f"agent on {self.host}: {event.get('message')}"
        elif kind == "lost":
            if not self._closed:
                self._problem = self._problem or f"lost the agent on {self.host}: {event.get('reason')}"

    # -- ProcessGroup hooks ---------------------------------------------------------------
    def _launch(self) -> None:
        # The first group started launches every sibling's agent in parallel (connect, copy the
        # files, start the agent): the supervisor starts groups one after the other, and a
        # cluster of many hosts should not pay for each connection in turn.
        waiting = [group for group in self.siblings if not group._launch_attempted]
        for group in waiting:
            group._launch_attempted = True
        outcome = run_on_each(waiting, lambda group: group._start_agent())
        for group, error in outcome.failed.items():
            group._launch_error = error
        if self._launch_error is not None:
            raise self._launch_error if isinstance(self._launch_error, OSError) else OSError(
                f"cannot start the agent on {self.host}: {self._launch_error}")
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            event = self._wait_event(deadline)
            if event is None:
                break
            if event["event"] == "hello":
                return
            if event["event"] in ("error", "lost", "done"):
                message = event.get("message") or event.get("reason") or "agent ended at start"
                raise OSError(f"agent on {self.host} did not start: {message}")
        raise OSError(f"agent on {self.host} did not report within {self.start_timeout_s:g}s")

    def _start_agent(self) -> None:
        """Connect, copy this host's files, start the agent (its "hello" is awaited in _launch())."""
        self.session.open()  # ConnectionError (an OSError) with one clear line
        # The controller has written the job dir locally by now (launch() does, before start):
        # the host gets the same rendered files and the same job.json.
        from launcher.job.render import render_job

        job_json = (self.job_dir / "job.json").read_text()
        files = files_for_host(self.plan, render_job(self.plan), self.host, job_json)
        try:
            self.session.push(files)
        except Exception as error:  # SFTP refusals: permissions, full disk, ...
            raise OSError(f"cannot copy the job files to {self.host}:{self.job_dir}: {error}") from None
        push_job_files(self.plan, self.push_also, self.session.options, job_json)
        self.session.start(self.heartbeat_timeout_s)
        self._agent_started = True

    def _wait_event(self, deadline: float) -> Optional[dict]:
        try:
            event = self.session.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        self._handle(event)
        return event

    def _observe(self) -> list[RankExit]:
        self._pump()
        # Ranks the agent stopped itself are not failures of theirs: they are reported at close.
        out = [e for e in self._pending if not e.stopped_by_launcher]
        self._pending = [e for e in self._pending if e.stopped_by_launcher]
        return out

    def _terminate(self, grace: float) -> None:
        for group in self.siblings:
            group.request_stop(grace)
        if self._agent_started:
            # The agent needs the grace period plus the time to report, and says "alive" every
            # second meanwhile. A host that went quiet is not waited for: Ctrl-C must end the
            # controller within seconds, and that agent stops its ranks when our heartbeats stop.
            deadline = time.monotonic() + grace + 15.0
            while not self.session.finished.wait(0.1):
                if time.monotonic() > deadline or self.session.silent_for() > QUIET_HOST_S:
                    break
            self._pump()
        self.session.close(timeout_s=0.0)
        self._pump()

    def _exit_after_stop(self, rank: int) -> RankExit:
        for exit_ in self._pending:
            if exit_.rank == rank:
                return exit_
        # The agent went away without a word: it stops its ranks when its link dies
        # (SIGTERM, then SIGKILL), which is what we record.
        return RankExit(rank, self.rank_host(rank), None, signal.SIGTERM.value)

    def _silence(self) -> Optional[str]:
        """The host stopped answering: nothing from its agent (which says "alive" every second) for the timeout."""
        if not self._agent_started or self._closed or self.session.finished.is_set():
            return None
        silent = self.session.silent_for()
        if silent > self.heartbeat_timeout_s:
            blocked = self.session.send_blocked_since
            how = f"; a write to it has been blocked for {time.monotonic() - blocked:.0f} s" if blocked else ""
            return (f"host {self.host} stopped answering: nothing from its agent for {silent:.0f} s "
                    f"(--heartbeat-timeout {self.heartbeat_timeout_s:g}){how}; given up")
        return None

    def _helper_problem(self) -> Optional[str]:
        self._pump()
        if self._problem is None:
            self._problem = self._silence()
        return self._problem or self._helper_message

    def _helpers_done(self) -> bool:
        self._pump()
        return self._helper_finished or self._problem is not None

    def _read_lines(self) -> list[tuple[int, str]]:
        self._pump()
        lines, self._lines = self._lines, []
        return lines

    def _tail(self, rank: int, lines: int) -> str:
        self._pump()
        return "\n".join(self._tails.get(rank, "").splitlines()[-lines:])

    def _where(self, rank: int) -> str:
        return f"{self.rank_host(rank)}:{self.log_file(rank)}"

    def _look(self, ranks: Sequence[int], title: str) -> dict:
        """The agent dumps its ranks' stacks on its host (into LOG<rank>/stack.txt there) and says what it saw."""
        from launcher.job.safe_text import visible
        from launcher.run.hang import RankLook

        if not self._agent_started or self._problem is not None or self.session.finished.is_set():
            return {}
        self._stacks_answer = None
        self.session.send(f"stack {','.join(str(rank) for rank in ranks)} {visible(title, 400)}")
        deadline = time.monotonic() + STACKS_TIMEOUT_S
        while self._stacks_answer is None and time.monotonic() < deadline and not self.session.finished.is_set():
            self._wait_event(min(deadline, time.monotonic() + 0.5))
        looks = {}
        for key, item in (self._stacks_answer or {}).items():
            if not (isinstance(item, dict) and str(key).isdigit()):
                continue
            rank = int(key)
            looks[rank] = RankLook(rank, self.rank_host(rank), tuple(int(p) for p in item.get("pids") or ()),
                                   str(item.get("state") or "?"), item.get("waiting_in"), item.get("stack"))
        return looks

    def request_stop(self, grace: float) -> None:
        """Tell the agent to stop its ranks (SIGTERM, ``grace`` s, SIGKILL); returns at once."""
        if self._agent_started and not self._stop_sent:
            self._stop_sent = True
            self.session.send(f"stop {grace:g}")
            self.session.stop()


def push_job_files(plan: "Plan", hosts: Sequence[RemoteHost], options: SshOptions, job_json: str) -> None:
    """Copy each host's part of the job dir to it (hosts whose ranks someone else starts: mpirun)."""
    from launcher.job.render import render_job

    rendered = render_job(plan)
    for remote in hosts:
        session = AgentSession(remote, options, str(plan.spec.job_dir), "", plan_host=remote.host_name)
        try:
            session.open()
            session.push(files_for_host(plan, rendered, remote.host_name, job_json))
        except OSError:
            raise
        except Exception as error:  # SFTP refusals: permissions, full disk, ...
            raise OSError(f"cannot copy the job files to {remote.host_name}:{plan.spec.job_dir}: {error}") from None
        finally:
            session.connection.close()


def mpirun_ssh_env(options: SshOptions) -> dict:
    """Open MPI starts its daemons with ``ssh``: give it the same config, key and host-key policy.

    The paths must exist on the host running mpirun (the first host).
    """
    words = ["-o", "BatchMode=yes"]
    if options.config_file is not None:
        words += ["-F", str(Path(options.config_file).resolve())]
    if options.key_file is not None:
        words += ["-i", str(Path(options.key_file).resolve())]
    if options.known_hosts is not None:
        words += ["-o", f"UserKnownHostsFile={Path(options.known_hosts).resolve()}"]
    if options.accept_unknown_host_keys:
        words += ["-o", "StrictHostKeyChecking=accept-new"]
    return {"OMPI_MCA_plm_rsh_args": " ".join(shlex.quote(word) for word in words)}


class MpirunAcrossHosts(MpirunGroup):
    """mpirun on this machine (the first host) with ranks on remote hosts: their files are pushed first."""

    def __init__(self, plan: "Plan", others: Sequence[RemoteHost], options: SshOptions) -> None:
        super().__init__(plan)
        self.others, self.options = list(others), options

    def _launch(self) -> None:
        job_json = (self.job_dir / "job.json").read_text()
        push_job_files(self.plan, self.others, self.options, job_json)
        for key, value in mpirun_ssh_env(self.options).items():
            os.environ.setdefault(key, value)  # a user's own OMPI_MCA_plm_rsh_args wins
        super()._launch()


def multi_host_groups(remote_hosts: "dict[str, RemoteHost]", options: SshOptions, remote_python: str,
                      **group_options: float) -> "Callable[[Plan], list[ProcessGroup]]":
    """The ``group_factory`` for launch(): local hosts as LocalGroup, the others through agents.

    mpirun mode: one group on the first host runs mpirun for every rank (it reaches the other
    hosts with ssh itself); the other hosts only get their files.
    """
    from launcher.run.local import LocalGroup

    def factory(plan: "Plan") -> list[ProcessGroup]:
        if plan.spec.mode == "mpirun":
            first = plan.hosts[0].host
            others = [remote_hosts[e.host.name] for e in plan.hosts[1:] if not e.host.local]
            if first.local:
                return [MpirunAcrossHosts(plan, others, options)]
            return [RemoteHostGroup(plan, first.name, remote_hosts[first.name], options, remote_python,
                                    push_also=others, agent_env=mpirun_ssh_env(options), **group_options)]
        groups: list[ProcessGroup] = []
        remote: list[RemoteHostGroup] = []
        for entry in plan.hosts:
            name = entry.host.name
            if entry.host.local:
                groups.append(LocalGroup(plan, name))
            else:
                remote.append(RemoteHostGroup(plan, name, remote_hosts[name], options, remote_python, **group_options))
                groups.append(remote[-1])
        for group in remote:
            group.siblings = remote
        return groups

    return factory
