"""RemoteHostGroup: the ranks of one remote host, run by an agent there over SSH.

The supervisor drives it like every ProcessGroup: ``_launch`` connects (every sibling
host in parallel), pushes the host's part of the job dir and starts the agent
(launcher.remote.session); ``_observe`` turns the agent's events into rank exits, log
lines and tails; ``_terminate`` asks every agent to stop at once. A lost connection is
an event too: the job stops and says which host was lost, and the agent on the far side
stops its ranks by itself. Also here: mpirun across hosts (one mpirun on the first host
reaches the others with ssh itself) and the group factory launch() gets for such jobs.
"""
from __future__ import annotations

import os
import queue
import shlex
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from launcher.errors import LaunchError
from launcher.remote.channel_hub import ensure_fd_budget
from launcher.remote.host_slice import files_for_host, host_job_file, ranks_by_host, runs_mpirun
from launcher.remote.session import DEFAULT_HEARTBEAT_S, TRANSPORT_ERRORS, AgentSession, push_job_files
from launcher.remote.ssh import RemoteHost, SshOptions, connection, run_on_each
from launcher.run.failures import HostLost, RankExit
from launcher.run.group import ProcessGroup
from launcher.run.mpirun import MpirunGroup

if TYPE_CHECKING:
    from launcher.job.plan import Plan, Rank
    from launcher.remote.tree import SpawnTree
    from launcher.run.activity import Activity

# An agent says "alive" every second: one this long quiet is not waited for when stopping.
QUIET_HOST_S = 3.0
# py-spy has 20 s per process, all of a host's ranks in parallel.
STACKS_TIMEOUT_S = 60.0


class RemoteHostGroup(ProcessGroup):
    """The ranks of one remote host, run by an agent there; the supervisor drives it like any group."""

    logs_are_local = False  # lines, tails and exits arrive as agent events

    def __init__(self, plan: "Plan", host: str, remote: RemoteHost, options: SshOptions, remote_python: str,
                 *, heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                 heartbeat_timeout_s: float = 30.0, start_timeout_s: float = 60.0, config=None,
                 push_also: Sequence[RemoteHost] = (), agent_env: Optional[dict] = None,
                 own_ranks: "Optional[Sequence[Rank]]" = None, host_index: Optional[int] = None,
                 connect: Callable = connection, session: Any = None, waiting: Any = None,
                 waiting_also: Optional[dict] = None) -> None:
        """``own_ranks``, ``host_index``: when the caller has them (multi_host_groups finds them once for all hosts).
        ``session``: how the controller talks to the host's agent when not over a connection of its own
        (a RelayedSession: a relay of the tree start started it). ``waiting``: the host's pre-flight
        session, kept to become its agent (launcher.remote.session.WaitingAgent)."""
        self.own_ranks = tuple(own_ranks) if own_ranks is not None else plan.ranks_on(host)
        super().__init__(plan, host, plan.ranks if runs_mpirun(plan, host) else self.own_ranks)
        self.host_index = host_index if host_index is not None else next(
            index for index, entry in enumerate(plan.hosts) if entry.host.name == host)
        self.connect = connect
        self.push_also = list(push_also)  # hosts that only need the files (mpirun starts their ranks)
        self.waiting_also = waiting_also  # their pre-flight sessions, kept to take the files (by host name)
        self.has_scheduler = plan.scheduler is not None and plan.scheduler.host == host
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.start_timeout_s = start_timeout_s
        # The --tee ranks of this host send every log line; the others only their progress.
        forward = sorted(set(self.ranks) & set(plan.spec.tee))
        self.session = session if session is not None else AgentSession(
            remote, options, str(self.job_dir), remote_python, heartbeat_s, config, plan_host=host,
            agent_env=agent_env, forward_ranks=forward, job_file=host_job_file(self.host_index), connect=connect,
            waiting=waiting)
        self._pending: list[RankExit] = []
        self._seen: set[int] = set()
        self._lines: list[tuple[int, str]] = []
        self._tails: dict[int, str] = {}
        self._helper_message: Optional[str] = None
        self._helper_finished = not self.has_scheduler
        self._problem: Optional[str] = None  # lost connection or agent error
        self._lost: Optional[str] = None  # the host is gone: connection lost, silent, unreachable
        self._agent_started = False
        self._stop_sent = False
        self._siblings_asked = False  # a sibling's close asked every agent to stop already
        self._launch_attempted = False
        self._launch_error: Optional[BaseException] = None
        self._files: list = []  # what this host is sent (launcher.remote.host_slice), read before the fan-out
        # Tree start (launcher.remote.tree): the group of the relay the controller started above this
        # host (None: the controller starts this host's agent), and for such a relay what its
        # subtree is sent through it (launcher.remote.relay.tree_files).
        self.root_group: "Optional[RemoteHostGroup]" = None
        self._tree_files: Optional[Callable[[], list]] = None
        self._stacks_answer: Optional[dict] = None
        # The remote groups of one attempt: the supervisor closes groups one after the other,
        # so the first close() asks every agent to stop at once and the job stops in one grace period.
        self.siblings: list[RemoteHostGroup] = [self]

    # -- events -------------------------------------------------------------------------
    def report_news_to(self, activity: "Activity") -> bool:
        """Every event the session queues is news, but "alive": it only says the host is there, and
        silence is the supervisor's periodic sweep's to notice (``_silence``)."""
        def on_event(event: dict) -> None:
            if event.get("event") != "alive":
                activity.note(self)

        self.session.on_event = on_event
        return True

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
        elif kind == "lost" and event.get("relay_lost"):  # its relay's loss is the relay's group's to report
            self._problem = self._problem or f"lost the agent on {self.host}: {event.get('reason')}"
        elif kind == "lost":
            if not self._closed:
                self._problem = self._problem or f"lost the agent on {self.host}: {event.get('reason')}"
                self._lost = self._lost or f"lost its agent: {event.get('reason')}"

    # -- ProcessGroup hooks ---------------------------------------------------------------
    def _launch(self) -> None:
        # The first group started launches every sibling's agent in parallel (connect, copy the
        # files, start the agent): the supervisor starts groups one after the other, and a
        # cluster of many hosts should not pay for each connection in turn.
        waiting = [group for group in self.siblings if not group._launch_attempted]
        for group in waiting:
            group._launch_attempted = True
            if group.root_group is not None:
                continue  # its relay is sent its files
            # Each host's files are read here, in one thread, before the fan-out: the pool's threads
            # then only wait on the network. Read from 64 threads at once, every small read gives up
            # and waits to retake the GIL, and a 1,024-host start was mostly that wait.
            try:
                group._files = files_for_host(group.plan, group.host, group.host_index, group.own_ranks)
                if group._tree_files is not None:
                    group._files += group._tree_files()
            except OSError as error:
                group._launch_error = error
        direct = [group for group in waiting if group._launch_error is None and group.root_group is None]
        outcome = run_on_each(direct, lambda group: group._start_agent(), parallel=self.session.options.parallel)
        for group, error in outcome.failed.items():
            group._launch_error = error
        for group in waiting:
            if group.root_group is None and group._launch_error is not None:
                for routed in group.session.routes.values():  # nobody will start the hosts below it
                    routed.relay_lost(f"its relay {group.host} could not be started", group.host)
            elif group.root_group is not None:
                group._agent_started = group.root_group._agent_started
        if self._launch_error is not None:
            self._lost = f"its agent could not be started: {self._launch_error}"
            raise HostLost(self.host, str(self._launch_error) if isinstance(self._launch_error, OSError) else
                           f"cannot start the agent on {self.host}: {self._launch_error}")
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            event = self._wait_event(deadline)
            if event is None:
                break
            if event["event"] == "hello":
                return
            if event.get("relay_lost"):  # the relay's fault, not this host's
                relay = str(event.get("blame"))
                raise HostLost(relay, f"relay host {relay} was lost while starting {self.host}: {event.get('reason')}")
            if event["event"] in ("error", "lost", "done"):
                message = event.get("message") or event.get("reason") or "agent ended at start"
                self._lost = f"its agent did not start: {message}"
                raise HostLost(self.host, f"agent on {self.host} did not start: {message}")
        self._lost = f"its agent did not report within {self.start_timeout_s:g} s"
        raise HostLost(self.host, f"agent on {self.host} did not report within {self.start_timeout_s:g}s")

    def _start_agent(self) -> None:
        """Connect (unless pre-flight's session waits), start the agent and send it this host's files
        down its own channel (its "hello" is awaited in _launch())."""
        self.session.open()  # ConnectionError (an OSError) with one clear line
        if self.push_also:
            push_job_files(self.plan, self.push_also, self.session.options, self.session.remote_python, self.connect,
                           self.waiting_also)
        # The controller rendered and wrote the whole job dir before any group starts (launch()
        # does): the host gets its slice of those files, nothing is rendered again per host.
        try:
            self.session.start(self.heartbeat_timeout_s, self._files)
        except TRANSPORT_ERRORS as error:
            raise OSError(f"cannot start the agent on {self.host} and send it the job files: "
                          f"{type(error).__name__}: {error}") from None
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
        if not self._siblings_asked:
            # The first group closed asks every agent at once; the others need not ask again
            # (asking from each group would be hosts x hosts calls: 1M at 1,024 hosts).
            for group in self.siblings:
                group.request_stop(grace)
                group._siblings_asked = True
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
            self._lost = self._lost or f"stopped answering: nothing from its agent for {silent:.0f} s"
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

    def _lost_hosts(self) -> "dict[str, str]":
        self._pump()
        return {self.host: self._lost} if self._lost else {}

    def _ask_to_save(self) -> bool:
        """The agent passes "save and stop" to its ranks (its own group's save_and_stop)."""
        if not self._agent_started or self._stop_sent or self._problem is not None:
            return False
        self.session.send("save")
        return True

    def request_stop(self, grace: float) -> None:
        """Tell the agent to stop its ranks (SIGTERM, ``grace`` s, SIGKILL); returns at once."""
        if self._agent_started and not self._stop_sent:
            self._stop_sent = True
            self.session.send(f"stop {grace:g}")
            self.session.stop()


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

    def __init__(self, plan: "Plan", others: Sequence[RemoteHost], options: SshOptions, remote_python: str,
                 connect: Callable = connection, waiting: Optional[dict] = None) -> None:
        super().__init__(plan)
        self.others, self.options, self.remote_python = list(others), options, remote_python
        self.connect, self.waiting = connect, waiting

    def _launch(self) -> None:
        push_job_files(self.plan, self.others, self.options, self.remote_python, self.connect, self.waiting)
        for key, value in mpirun_ssh_env(self.options).items():
            os.environ.setdefault(key, value)  # a user's own OMPI_MCA_plm_rsh_args wins
        super()._launch()


def multi_host_groups(remote_hosts: "dict[str, RemoteHost]", options: SshOptions, remote_python: str,
                      connect: Callable = connection, waiting: Optional[dict] = None,
                      **group_options: Any) -> "Callable[[Plan], list[ProcessGroup]]":
    """The ``group_factory`` for launch(): local hosts as LocalGroup, the others through agents.

    mpirun mode: one group on the first host runs mpirun for every rank (it reaches the other
    hosts with ssh itself); the other hosts only get their files. Above ``options.tree_width``
    remote hosts, the controller starts the agents of the tree's first tier only, and those
    start the rest (launcher.remote.tree, launcher.remote.relay). ``waiting``: pre-flight sessions
    kept open by host name (launcher.remote.preflight); a group takes its host's, once.
    """
    from launcher.run.local import LocalGroup

    def factory(plan: "Plan") -> list[ProcessGroup]:
        if plan.spec.mode == "mpirun":
            first = plan.hosts[0].host
            others = [remote_hosts[e.host.name] for e in plan.hosts[1:] if not e.host.local]
            if first.local:
                return [MpirunAcrossHosts(plan, others, options, remote_python, connect, waiting)]
            return [RemoteHostGroup(plan, first.name, remote_hosts[first.name], options, remote_python,
                                    push_also=others, agent_env=mpirun_ssh_env(options), connect=connect,
                                    waiting=(waiting or {}).pop(first.name, None), waiting_also=waiting,
                                    **group_options)]
        groups: list[ProcessGroup] = []
        remote: dict[int, RemoteHostGroup] = {}
        by_host = ranks_by_host(plan)
        tree = spawn_tree_of(plan, options)
        try:
            ensure_fd_budget(len(tree.roots))
        except ValueError as error:
            raise LaunchError(str(error)) from None
        for index, entry in enumerate(plan.hosts):
            name = entry.host.name
            if entry.host.local:
                groups.append(LocalGroup(plan, name))
            else:
                # A host a relay starts is reached through its root's session, never a connection of its own.
                relayed = _relayed_session(remote[tree.root_of(index)], index, name) if index in tree.parent else None
                remote[index] = RemoteHostGroup(plan, name, remote_hosts[name], options, remote_python,
                                                own_ranks=by_host[name], host_index=index, connect=connect,
                                                session=relayed, waiting=None if relayed is not None or waiting is None
                                                else waiting.pop(name, None), **group_options)
                groups.append(remote[index])
        if tree.parent:
            _wire_tree(plan, tree, remote, remote_hosts, options, remote_python, by_host, group_options)
        for group in remote.values():
            group.siblings = list(remote.values())
        return groups

    return factory


def spawn_tree_of(plan: "Plan", options: SshOptions) -> "SpawnTree":
    """Which host starts which agent for this plan (launcher.remote.tree): mpirun jobs have no tree."""
    from launcher.remote.tree import plan_tree

    remote = [index for index, entry in enumerate(plan.hosts) if not entry.host.local]
    return plan_tree(remote, 0 if plan.spec.mode == "mpirun" else options.tree_width)


def _relayed_session(root: "RemoteHostGroup", index: int, host: str):
    from launcher.remote.relay import RelayedSession

    return RelayedSession(root.session, index, host)


def _wire_tree(plan: "Plan", tree: "SpawnTree", groups: "dict[int, RemoteHostGroup]", remote_hosts: dict,
               options: SshOptions, remote_python: str, by_host: dict, group_options: dict) -> None:
    """Roots get their relay spec and their subtree's files; relayed hosts know their root, and a relay
    below a root knows the sessions of the hosts it starts (they are cut off with it)."""
    from launcher.remote.relay import relay_job_file, tree_files

    heartbeat_timeout_s = float(group_options.get("heartbeat_timeout_s", 30.0))
    heartbeat_s = float(group_options.get("heartbeat_s", DEFAULT_HEARTBEAT_S))

    def files_for(index: int) -> list:
        name = plan.hosts[index].host.name
        return files_for_host(plan, name, index, by_host[name])

    for index in tree.roots:
        if not tree.children.get(index):
            continue
        root = groups[index]
        root.session.relay_file = relay_job_file(index)
        root._tree_files = (lambda index=index: tree_files(plan, tree, index, remote_hosts, options, remote_python,
                                                           heartbeat_s, heartbeat_timeout_s, by_host, files_for))
        for below in tree.subtree(index):
            group = groups[below]
            group.root_group = root
            if tree.parent[below] != index:
                groups[tree.parent[below]].session.below.append(group.session)
