"""A tree start's two ends: the relay an agent runs for its subtree, and the controller's view of a relayed agent.

launcher.remote.tree plans which host starts which. The controller pushes a relay host
(one it starts itself) its own slice plus, for every host below it, that host's slice under
``relay/<relay index>/host-<index>/`` and, for a host that is a relay too, its
``agents/relay-<index>.json``
(a ``RelaySpec``). The relay host's agent (``--relay agents/relay-<index>.json``) then runs a
``Relay`` beside its own ranks:

  - it connects to each child with the same SSH code the controller uses (AgentSession, the
    bounded pool, one channel hub) and starts the child's agent, sending it its slice (and the
    slices of the child's own subtree) down the agent's channel;
  - every event of a child (or of a child's child) goes up with ``"via": <host index>``;
    a child's "alive" stays here: the relay watches its children's silence itself and reports
    a silent or lost child as a ``lost`` event (the controller only hears its relays);
  - ``to <index> <line>`` from above goes to that child, or to the child whose subtree holds it;
  - when the relay's agent stops (told to, its controller lost, a signal) it tells every child
    to stop with the same grace, waits for their "done" (each child's last events still go
    up) and closes: no agent below outlives its relay, none outlives the controller.

On the controller, a ``RelayedSession`` stands for a relayed host's agent where an
AgentSession would: its events are the relay's "via" events for it, its lines go down through
the relay's root session, and it is lost with the relay (``relay_lost``: the host itself is
not blamed for its relay's loss).

The SSH options (``--ssh-config``, ``--ssh-key``, ``--ssh-known-hosts``) are handed to the
relays as paths: they must exist there too, as for mpirun's own ssh (a shared home does it).
"""
from __future__ import annotations

import os
import posixpath
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from launcher.remote.host_slice import MAX_JOB_FILE_BYTES, PushedFile, host_job_file
from launcher.remote.tree import RELAY_DIR

MAX_RELAY_SPEC_BYTES = 16 << 20


def relay_job_file(index: int) -> str:
    return f"agents/relay-{index}.json"


def staged_dir(relay: int, index: int) -> str:
    """Where relay host ``relay`` keeps what host ``index`` below it is sent, relative to the job dir
    (a path per relay: hosts sharing the job dir's file system do not share their staging)."""
    return f"{RELAY_DIR}/{relay}/host-{index}"


@dataclass(frozen=True)
class RelayChild:
    index: int  # the host's position in the plan
    host: str  # its name in the plan (the agent's --host)
    hostname: str  # where to connect (after the controller's ssh config)
    alias: str  # the host as the user wrote it: the relay's ssh config is looked up by it, as OpenSSH does
    port: int
    user: str
    forward_ranks: tuple[int, ...]
    subtree: tuple[int, ...]  # the hosts it starts in turn (it is a relay when not empty)


@dataclass(frozen=True)
class RelaySpec:
    index: int
    job_dir: str
    remote_python: str
    heartbeat_s: float
    heartbeat_timeout_s: float
    ssh: dict  # SshOptions' fields, paths as text
    job_wide: tuple[str, ...]  # job-wide files (rank_table.json) the relay copies from its own job dir
    children: tuple[RelayChild, ...]

    def to_json(self) -> dict:
        return {"relay": self.index, "job_dir": self.job_dir, "remote_python": self.remote_python,
                "heartbeat_s": self.heartbeat_s, "heartbeat_timeout_s": self.heartbeat_timeout_s,
                "ssh": self.ssh, "job_wide": list(self.job_wide),
                "children": [{"index": c.index, "host": c.host, "hostname": c.hostname, "alias": c.alias, "port": c.port,
                              "user": c.user, "forward_ranks": list(c.forward_ranks),
                              "subtree": list(c.subtree)} for c in self.children]}

    @classmethod
    def from_json(cls, value: Any) -> "RelaySpec":
        """ValueError (one line) for anything that is not what the controller writes."""
        def need(mapping: Any, key: str, kind: Any, where: str) -> Any:
            if not isinstance(mapping, dict) or key not in mapping:
                raise ValueError(f"{where}: missing {key!r}")
            item = mapping[key]
            if not isinstance(item, kind) or (kind is not bool and isinstance(item, bool)):
                raise ValueError(f"{where}: {key!r} has the wrong type")
            return item

        where = "relay spec"
        children = []
        for number, child in enumerate(need(value, "children", list, where)):
            at = f"{where}: children[{number}]"
            numbers = [need(child, key, list, at) for key in ("forward_ranks", "subtree")]
            if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for items in numbers for n in items):
                raise ValueError(f"{at}: 'forward_ranks' and 'subtree' must list whole numbers")
            children.append(RelayChild(need(child, "index", int, at), need(child, "host", str, at),
                                       need(child, "hostname", str, at), need(child, "alias", str, at),
                                       need(child, "port", int, at),
                                       need(child, "user", str, at), tuple(numbers[0]), tuple(numbers[1])))
        job_wide = need(value, "job_wide", list, where)
        if not all(isinstance(name, str) and "/" not in name and name not in ("", ".", "..") for name in job_wide):
            raise ValueError(f"{where}: 'job_wide' must list file names")
        return cls(need(value, "relay", int, where), need(value, "job_dir", str, where),
                   need(value, "remote_python", str, where), float(need(value, "heartbeat_s", (int, float), where)),
                   float(need(value, "heartbeat_timeout_s", (int, float), where)), need(value, "ssh", dict, where),
                   tuple(job_wide), tuple(children))

    def ssh_options(self):
        from launcher.remote.ssh import SshOptions

        ssh = self.ssh
        path = lambda key: Path(ssh[key]) if ssh.get(key) else None  # noqa: E731
        return SshOptions(config_file=path("config_file"), key_file=path("key_file"),
                          timeout_s=float(ssh.get("timeout_s", 10.0)), known_hosts=path("known_hosts"),
                          accept_unknown_host_keys=bool(ssh.get("accept_unknown_host_keys")),
                          parallel=int(ssh.get("parallel", 32)))


def ssh_fields(options) -> dict:
    """SshOptions as a relay spec's ``ssh`` (absolute paths: the relay runs elsewhere)."""
    def text(path: Optional[Path]) -> Optional[str]:
        return str(Path(path).expanduser().resolve()) if path is not None else None

    return {"config_file": text(options.config_file), "key_file": text(options.key_file),
            "known_hosts": text(options.known_hosts), "accept_unknown_host_keys": options.accept_unknown_host_keys,
            "timeout_s": options.timeout_s, "parallel": options.parallel}


class DiskFiles:
    """A relay's staged files on its own disk (the real agent's)."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir

    def read_tree(self, prefix: str) -> list[PushedFile]:
        """Every regular file under job_dir/prefix, paths relative to it (symlinks not followed)."""
        from hccl.text_file import read_regular_bytes

        base = self.job_dir / prefix
        files = []
        for folder, dirs, names in os.walk(base):
            dirs.sort()
            for name in sorted(names):
                local = Path(folder) / name
                relative = local.relative_to(base).as_posix()
                if name.startswith(".") and ".push-" in name:
                    continue  # another push's temporary file on a shared file system
                data = read_regular_bytes(local, MAX_JOB_FILE_BYTES)
                files.append(PushedFile(relative, data.decode(), executable=bool(local.stat().st_mode & 0o111)))
        return files

    def read_file(self, path: str) -> Optional[PushedFile]:
        from hccl.text_file import read_regular_bytes

        local = self.job_dir / path
        if not local.is_file():
            return None
        return PushedFile(path, read_regular_bytes(local, MAX_JOB_FILE_BYTES).decode(),
                          executable=bool(local.stat().st_mode & 0o111))

    def remove_tree(self, prefix: str) -> None:
        shutil.rmtree(self.job_dir / prefix, ignore_errors=True)
        try:
            (self.job_dir / RELAY_DIR).rmdir()  # once it holds nothing more
        except OSError:
            pass


class _Up:
    """A child session's event queue: its events go up with "via" (its "alive" stays here)."""

    def __init__(self, relay: "Relay", index: int) -> None:
        self.relay, self.index = relay, index

    def put(self, event: dict) -> None:
        if event.get("event") == "alive":
            return
        if "via" not in event and event.get("event") in ("done", "lost"):  # the child's own end
            self.relay._child_ended(self.index)
        fields = dict(event)
        fields.setdefault("via", self.index)
        self.relay.emit(fields.pop("event"), **fields)


class Relay:
    """Starts, watches and stops one agent's subtree (see the module docstring)."""

    WATCH_INTERVAL_S = 0.5
    QUIET_S = 3.0  # a child heard from less recently than this is not waited for at stop

    def __init__(self, spec: RelaySpec, emit: Callable[..., None], files: Any = None, connect: Optional[Callable] = None,
                 hub: Any = None, thread_name: str = "relay", name: Optional[str] = None) -> None:
        from launcher.remote.ssh import connection, fabric_config

        self.spec = spec
        self.name = name or f"#{spec.index}"  # this host, in messages
        self.emit = emit
        self.files = files or DiskFiles(Path(spec.job_dir))
        self.connect = connect or connection
        self.hub = hub
        self.thread_name = thread_name
        self.ssh = spec.ssh_options()
        self.config = fabric_config(self.ssh)  # read once for every child
        self.sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._ended: set[int] = set()
        self._stop = threading.Event()
        self._stopped_children = False
        self._grace = 5.0
        self._via: dict[int, int] = {}  # every host below -> the child whose subtree holds it
        for child in spec.children:
            self._via[child.index] = child.index
            for index in child.subtree:
                self._via[index] = child.index
        self._starter: Optional[threading.Thread] = None
        self._watcher: Optional[threading.Thread] = None

    # -- start --------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every child in the background (the agent's own ranks start meanwhile)."""
        self._starter = threading.Thread(target=self._start_all, daemon=True, name=f"{self.thread_name}-start")
        self._starter.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True, name=f"{self.thread_name}-watch")
        self._watcher.start()

    def _start_all(self) -> None:
        from launcher.remote.channel_hub import ensure_fd_budget
        from launcher.remote.ssh import run_on_each

        try:
            ensure_fd_budget(len(self.spec.children))
        except ValueError as error:  # this host may not open enough files for its part of the tree
            for child in self.spec.children:
                self._lost(child.index, f"relay host {self._me()} cannot start it: {error}")
            self.files.remove_tree(f"{RELAY_DIR}/{self.spec.index}")
            return
        # Every child's session (and its fabric Connection) is made here, in one thread: Connection()
        # writes to the shared config it is given, which another thread may be reading.
        sessions = []
        for child in self.spec.children:
            try:
                sessions.append((child, self._session_for(child)))
            except (OSError, ValueError) as error:  # e.g. an unreadable known_hosts on this host
                self._lost(child.index, f"relay host {self._me()} cannot connect to it: {error}")
        try:
            run_on_each(sessions, self._start_child, key=lambda item: item[0].index,
                        parallel=self.ssh.parallel, thread_name=f"{self.thread_name}-pool")
        finally:
            self.files.remove_tree(f"{RELAY_DIR}/{self.spec.index}")  # every child has its copy now

    def _session_for(self, child: RelayChild):
        from launcher.job.hosts import HostEntry
        from launcher.remote.session import AgentSession
        from launcher.remote.ssh import RemoteHost

        # The relay host's ssh config for the child, as the controller's was read for it (IdentityFile,
        # UserKnownHostsFile); the address, port and user are the controller's.
        remote = RemoteHost(HostEntry(host=child.alias, user=child.user, port=child.port, source="relay spec"),
                            child.hostname, child.hostname, child.port, child.user,
                            dict(self.config.base_ssh_config.lookup(child.alias)))
        return AgentSession(remote, self.ssh, self.spec.job_dir, self.spec.remote_python, self.spec.heartbeat_s,
                            plan_host=child.host, forward_ranks=child.forward_ranks,
                            job_file=host_job_file(child.index), connect=self.connect, hub=self.hub, config=self.config,
                            relay_file=relay_job_file(child.index) if child.subtree else None,
                            events=_Up(self, child.index))

    def _start_child(self, item: "tuple[RelayChild, Any]") -> None:
        from launcher.remote.session import TRANSPORT_ERRORS

        child, session = item
        if self._stop.is_set():  # never started: nothing of it to wait for, and not the host's fault
            self.emit("done", via=child.index, reason="stop-requested", code=0)
            self._child_ended(child.index)
            return
        where = f"{child.user}@{child.hostname}:{child.port}"
        try:
            files = self._files_for(child)
            session.open()
            session.start(self.spec.heartbeat_timeout_s, files)  # the files go down the agent's own channel
        except (OSError, ValueError) + TRANSPORT_ERRORS as error:
            session.connection.close()
            self._lost(child.index, f"could not start its agent from relay host {self._me()} ({where}): {error}")
            return
        with self._lock:
            self.sessions[child.index] = session
            late = self._stopped_children  # the stop went down before this child was up
        if late:
            session.send(f"stop {self._grace:g}")
            session.stop()

    def _files_for(self, child: RelayChild) -> list[PushedFile]:
        mine = self.spec.index
        files = self.files.read_tree(staged_dir(mine, child.index))
        if not files:
            raise OSError(f"nothing staged for it in {self.spec.job_dir}/{staged_dir(mine, child.index)}")
        for name in self.spec.job_wide:
            item = self.files.read_file(name)
            if item is not None:
                files.append(item)
        for index in child.subtree:  # staged on the child in turn, for its own relay
            files += [PushedFile(posixpath.join(staged_dir(child.index, index), item.path), item.text, item.executable)
                      for item in self.files.read_tree(staged_dir(mine, index))]
        return files

    def _me(self) -> str:
        return self.name

    # -- running ------------------------------------------------------------------------------
    def forward(self, index: int, line: str) -> None:
        """A line from above for host ``index`` (one of ours, or below one of ours)."""
        child = self._via.get(index)
        session = self.sessions.get(child) if child is not None else None
        if session is None:
            return
        session.send(line if child == index else f"to {index} {line}")

    def _lost(self, index: int, reason: str) -> None:
        self._child_ended(index)
        self.emit("lost", via=index, reason=reason)

    def _child_ended(self, index: int) -> None:
        with self._lock:
            self._ended.add(index)

    def _watch(self) -> None:
        """A child heard from by nobody for the heartbeat timeout is lost; a stop is passed down."""
        while not self._stop.wait(self.WATCH_INTERVAL_S):
            for index, session in list(self.sessions.items()):
                if index in self._ended or session.finished.is_set():
                    continue
                silent = session.silent_for()
                if silent > self.spec.heartbeat_timeout_s:
                    self._lost(index, f"stopped answering: nothing from its agent for {silent:.0f} s "
                                      f"(relay host {self._me()})")
                    session.send(None)
        self._stop_children()

    def stop(self, grace: float) -> None:
        """Tell every child to stop (returns at once; safe from any thread but a signal handler)."""
        self._grace = grace
        self._stop.set()

    def _stop_children(self) -> None:
        with self._lock:
            if self._stopped_children:
                return
            self._stopped_children = True
            sessions = list(self.sessions.values())
        for session in sessions:
            session.send(f"stop {self._grace:g}")
            session.stop()

    def finish(self, grace: float) -> None:
        """Stop every child (if not yet), wait for their "done" (bounded), close their connections."""
        self.stop(grace)
        if self._watcher is not None:
            self._watcher.join(timeout=2.0)
        self._stop_children()
        if self._starter is not None:
            self._starter.join(timeout=self.ssh.timeout_s + 5.0)
        deadline = time.monotonic() + grace + 15.0
        for session in list(self.sessions.values()):
            while not session.finished.wait(0.05):
                if time.monotonic() > deadline or session.silent_for() > max(self.QUIET_S, grace + 2.0):
                    break
        for session in list(self.sessions.values()):
            session.close(timeout_s=0.0)


class RelayedSession:
    """The controller's end of an agent a relay started (see the module docstring)."""

    def __init__(self, root: Any, index: int, host_name: str) -> None:
        self.root = root  # the AgentSession of the relay the controller started (the tree's root above it)
        self.index = index
        self.host_name = host_name
        self.options = root.options
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.finished = threading.Event()
        self.said_done = False
        self.send_blocked_since: Optional[float] = None
        self.below: list[RelayedSession] = []  # the hosts this one starts in turn (it is a relay too)
        self.on_event: Optional[Callable[[dict], None]] = None  # as AgentSession's: told of every event queued
        root.routes[index] = self

    def deliver(self, event: dict) -> None:
        """An event of this host's agent, as its relay passed it up."""
        if self.finished.is_set():
            return
        kind = event.get("event")
        self.events.put(event)
        if self.on_event is not None:
            self.on_event(event)
        if kind == "done":
            self.said_done = True
            self.finished.set()
        elif kind == "lost":
            self.finished.set()
            if not event.get("relay_lost"):  # this host is gone, and with it the relay of the hosts below it
                for routed in self.below:
                    routed.relay_lost(f"lost its relay {self.host_name}: {event.get('reason')}", self.host_name)

    def relay_lost(self, reason: str, blame: str) -> None:
        """Its relay (``blame``, a host name) is gone before this host's agent said "done"."""
        self.deliver({"event": "lost", "host": self.host_name, "reason": reason, "relay_lost": True, "blame": blame})

    def drain(self) -> list[dict]:
        from launcher.remote.session import drain_queue

        return drain_queue(self.events)

    def silent_for(self) -> float:
        """The relay speaks for its hosts: it reports one that goes silent as lost."""
        return self.root.silent_for()

    def send(self, line: Optional[str]) -> bool:
        if line is None or self.finished.is_set():
            return False
        if line.startswith("stop") and self.root.stop_sent:
            return True  # the relay stops its whole subtree when it stops
        return self.root.send(f"to {self.index} {line}")

    def stop(self) -> None:
        self.send("stop")

    def close(self, timeout_s: float = 10.0) -> None:
        self.stop()
        self.finished.wait(timeout_s)


def tree_files(plan: "Any", tree: Any, root: int, remote: dict, options, remote_python: str, heartbeat_s: float,
               heartbeat_timeout_s: float, by_host: dict, files_for: Callable[[int], list]) -> list[PushedFile]:
    """What the controller pushes a root relay beyond its own slice: every host below it staged
    under relay/<root>/host-<index>/ (its slice, and its relay spec when it is a relay too), and
    the root's own relay spec (agents/relay-<root>.json)."""
    import json

    from launcher.remote.host_slice import JOB_WIDE_FILES

    job_wide = tuple(JOB_WIDE_FILES.get(plan.spec.mode, ()))
    tee = set(plan.spec.tee)

    def spec_for(index: int) -> PushedFile:
        children = []
        for child in tree.children.get(index, ()):
            name = plan.hosts[child].host.name
            host = remote[name]
            children.append(RelayChild(child, name, host.hostname, host.entry.host, host.port, host.user,
                                       tuple(sorted({r.rank for r in by_host[name]} & tee)),
                                       tree.subtree(child)))
        spec = RelaySpec(index, str(plan.spec.job_dir), remote_python, heartbeat_s, heartbeat_timeout_s,
                         ssh_fields(options), job_wide, tuple(children))
        return PushedFile(relay_job_file(index), json.dumps(spec.to_json(), indent=1) + "\n")

    out = [spec_for(root)]
    for index in tree.subtree(root):
        staged = [item for item in files_for(index) if item.path not in job_wide]
        if tree.children.get(index):
            staged.append(spec_for(index))
        prefix = staged_dir(root, index)
        out += [PushedFile(posixpath.join(prefix, item.path), item.text, item.executable) for item in staged]
    return out


def read_relay_spec(job_dir: Path, path: str) -> RelaySpec:
    from hccl.text_file import read_regular_bytes
    from launcher.job.json_input import loads

    data = read_regular_bytes(job_dir / path, MAX_RELAY_SPEC_BYTES)
    return RelaySpec.from_json(loads(data))


__all__: Sequence[str] = ("Relay", "RelaySpec", "RelayedSession", "read_relay_spec", "relay_job_file", "staged_dir",
                          "tree_files")
