"""The per-host agent of a multi-host job: ``python -m launcher.remote.agent --job-dir DIR --host NAME``.

The controller (``launch-train --hosts ...``) runs one agent per host over SSH and, with
``--receive-files``, sends it that host's slice of the job down the same channel before
anything else (launcher.remote.file_stream; launcher.remote.host_slice says what: its ranks'
LOG<rank>/env.sh + run.sh, scheduler/run.sh where the scheduler runs, rank_table.json, and
``agents/host-<index>.json``, job.json's schema with only this host's ranks, named by
``--job-file``). Most often the agent is the host's pre-flight session carried on
(launcher.remote.preflight ``bootstrap``): one SSH session per host. The agent starts that
host's ranks (and the scheduler, on the first host of a dynamic job) with the same local
supervision code a local launch uses (launcher.backends.local.host_group: a LocalGroup, or
MpirunGroup on the first host of an mpirun job), and reports on stdout, one JSON object per
line (launcher.remote.protocol).

Ranks that finished are reported at once, but the agent keeps running (a dynamic job's
scheduler may still be waiting for other hosts) until the controller, which alone knows
when the whole job is over, says ``stop``.

It reads stdin: ``ping`` lines (heartbeats), ``stop`` (the controller stops the job),
``stack RANKS TITLE`` (dump those ranks' stacks: the controller's hang watchdog), ``save``
(ask every rank to save a checkpoint and stop: the controller was told of a preemption).
It stops its ranks and exits when asked to, when stdin closes (the SSH session or the
controller went away), when no line arrives within ``--heartbeat-timeout`` seconds (a
connection that died without closing), and on SIGTERM / SIGHUP / SIGINT. So an agent
never outlives its controller, and its ranks never outlive the agent.

The agent never writes job.json: on hosts that share the job dir's file system it is
one file, and only the controller owns it.
"""
from __future__ import annotations

import argparse
import os
import posixpath
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TextIO

from launcher.remote.protocol import ALIVE_INTERVAL_S, encode_event, progress_event


@dataclass
class ControllerLink:
    """The agent's view of its controller: stdin lines, heartbeats, stop requests."""

    heartbeat_timeout_s: float
    grace_s: float = 5.0
    stop_reason: Optional[str] = None

    def __post_init__(self) -> None:
        from launcher.run.supervisor import Interrupt

        if not self.heartbeat_timeout_s > 0:
            raise ValueError(f"--heartbeat-timeout {self.heartbeat_timeout_s}: must be positive")
        self.last_heard = time.monotonic()
        # What ends the agent's attempt (the supervisor sleeps on its event): a stop, a lost link, a signal.
        self.interrupt = Interrupt()
        self.stop_requested = self.interrupt.event
        self.stack_requests: list[tuple[list[int], str]] = []
        self.save_requested = False  # "save": pass "save a checkpoint and stop" to the ranks (once)
        # "to INDEX LINE": a line for a host this agent's relay started (launcher.remote.relay).
        self.forward: Optional[Callable[[int, str], None]] = None
        self.on_stop: Optional[Callable[[float], None]] = None  # the relay passes a stop down at once

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.interrupt.trigger(0)
        if self.on_stop is not None:
            self.on_stop(self.grace_s)

    def listen(self, stream: TextIO) -> None:
        """Read controller lines until EOF (run in a daemon thread)."""
        for line in stream:
            self.last_heard = time.monotonic()
            words = line.split()
            if words and words[0] == "to":
                parts = line.split(None, 2)
                if len(parts) == 3 and parts[1].isascii() and parts[1].isdigit() and self.forward is not None:
                    self.forward(int(parts[1]), parts[2].rstrip("\n"))
                continue
            if words and words[0] == "stack" and len(words) > 1:
                try:
                    ranks = [int(word) for word in words[1].split(",") if word]
                except ValueError:
                    continue
                self.stack_requests.append((ranks, line.split(None, 2)[2].strip() if len(words) > 2 else "stack"))
            if words and words[0] == "save":
                self.save_requested = True
            if words and words[0] == "stop":
                if len(words) > 1:
                    try:
                        self.grace_s = max(0.0, float(words[1]))
                    except ValueError:
                        pass
                self.request_stop("stop-requested")
        self.request_stop("controller-lost")

    def check_heartbeat(self) -> None:
        if time.monotonic() - self.last_heard > self.heartbeat_timeout_s:
            self.request_stop("controller-lost")


class EventWriter:
    """Writes protocol lines to stdout from a thread of its own; a vanished reader means the controller is gone.

    A controller that stops reading (its SSH session frozen) fills the pipe and blocks the
    write. Only the writer thread waits then: emitting never blocks and no lock is held
    across the write, so the agent's loop goes on, notices the missing heartbeats and
    stops its ranks. The agent says "alive" every second from here too, so the controller
    hears from it even while its loop is busy stopping ranks.
    """

    QUEUE_LIMIT = 10_000

    def __init__(self, stream: TextIO, link: ControllerLink, alive_interval_s: float = ALIVE_INTERVAL_S) -> None:
        import queue

        self.stream = stream
        self.link = link
        self._queue: "queue.Queue[Optional[str]]" = queue.Queue(maxsize=self.QUEUE_LIMIT)
        self._full = queue.Full
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write_lines, daemon=True, name="agent-events")
        self._writer.start()
        self._alive = threading.Thread(target=self._say_alive, args=(alive_interval_s,), daemon=True, name="agent-alive")
        self._alive.start()

    def __call__(self, event: str, **fields: Any) -> None:
        if self._closed.is_set():
            return
        try:
            self._queue.put_nowait(encode_event(event, **fields))
        except self._full:  # the controller has not read for a long time
            self.link.request_stop("controller-lost")

    def _say_alive(self, interval: float) -> None:
        while not self._closed.wait(interval):
            self("alive")

    def _write_lines(self) -> None:
        while True:
            line = self._queue.get()
            if line is None:
                return
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.link.request_stop("controller-lost")
                return

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (the final "done"), waiting at most timeout_s for a reader that is gone."""
        self._closed.set()
        try:
            self._queue.put(None, timeout=timeout_s)
        except self._full:
            return
        self._writer.join(timeout=timeout_s)


class AgentReporter:
    """This host's supervision, told to the controller: the ``status`` of the agent's run_attempt.

    Every rank exit becomes an "exited" event, progress lines (and every line of the --tee
    ranks) "progress"/"line" events, a failed or finished scheduler one "helper" event; each
    tick also checks the controller's heartbeat and answers its stack requests.
    """

    def __init__(self, emit: "EventWriter", link: ControllerLink, forward_ranks: frozenset = frozenset()) -> None:
        self.emit, self.link, self.forward_ranks = emit, link, forward_ranks
        self.exits: dict[int, Any] = {}
        self._started = False
        self._helper_reported = False
        self._save_passed = False

    def ended(self, group: Any, rank_exit: Any) -> None:
        self.exits[rank_exit.rank] = rank_exit
        self.emit("exited", **_exit_fields(rank_exit, group))

    def mark(self, rank: int, state: str) -> None:
        """The controller's console shows states; the agent has none."""

    def tick(self, groups: Sequence[Any], lines: Sequence[tuple[int, str]] = ()) -> None:
        (group,) = groups
        if not self._started:
            self._started = True
            for rank in group.ranks:
                self.emit("started", rank=rank)
        self.link.check_heartbeat()
        if self.link.save_requested and not self._save_passed:
            self._save_passed = True
            group.save_and_stop()
        while self.link.stack_requests:
            ranks, title = self.link.stack_requests.pop(0)
            looks = group.look_at(ranks, title)
            self.emit("stacks", ranks={str(rank): {"state": look.state, "waiting_in": look.waiting_in,
                                                   "stack": look.stack, "pids": list(look.pids)}
                                       for rank, look in looks.items()})
        for number, line in lines or ():
            fields = progress_event(number, line)
            if fields is not None:
                self.emit("progress", **fields)
            elif number in self.forward_ranks:
                self.emit("line", rank=number, line=line)
        problem = group.helper_problem()
        if not self._helper_reported and (problem is not None or group.helpers_done()):
            self._helper_reported = True
            self.emit("helper", problem=problem, done=group.helpers_done())

    def finish(self, groups: Sequence[Any]) -> None:
        """Nothing to draw: the "done" event follows."""


def run_agent(job_dir: Path, host: str, link: ControllerLink, emit: EventWriter,
              poll_interval_s: float = 0.2, forward_ranks: frozenset = frozenset(), job_file: str = "job.json",
              relay_file: Optional[str] = None) -> int:
    """Start and supervise this host's ranks until the controller says stop (or vanishes).

    ``job_file``: the document to run, relative to the job dir: the host's slice that the
    controller pushed (launcher.remote.host_slice), read as strictly as job.json.
    ``relay_file``: this host is a relay of a tree start (launcher.remote.relay): it also starts
    the agents of the hosts its spec names, passes their events up and stops them with its own.
    """
    from launcher.backends.local import host_group
    from launcher.job.job_record import load_job
    from launcher.run.supervisor import AttemptPolicy, run_attempt

    plan = load_job(job_dir, job_file).plan()
    runs_mpirun = plan.spec.mode == "mpirun" and plan.hosts[0].host.name == host
    if not runs_mpirun and not plan.ranks_on(host) and (plan.scheduler is None or plan.scheduler.host != host):
        emit("error", message=f"{job_dir}/{job_file} has no ranks on host {host!r}")
        emit("done", reason="error", code=2)
        return 2
    # The same group a local launch runs on this host (mpirun mode: one mpirun for every rank, which
    # reaches the other hosts over ssh itself); a scheduler elsewhere is waited for.
    group = host_group(plan, host, remote_scheduler=True)
    relay = None
    if relay_file is not None:
        from launcher.remote.relay import Relay, read_relay_spec

        relay = Relay(read_relay_spec(job_dir, relay_file), emit, name=host)
        link.forward = relay.forward
        link.on_stop = relay.stop
    emit("hello", host=host, pid=os.getpid(), ranks=list(group.ranks))
    if relay is not None:
        relay.start()  # its hosts' agents start while this host's ranks do
    reporter = AgentReporter(emit, link, forward_ranks)
    try:
        # The supervisor's own attempt, but it ends only when the controller says so (or is lost):
        # a failed rank is reported, and the controller decides what the whole job does.
        run_attempt([group], status=reporter, interrupt=link.interrupt, grace=lambda: link.grace_s,
                    poll_interval=poll_interval_s, policy=AttemptPolicy.observe_only())
    except OSError as error:  # the ranks could not start; every process of the group is stopped by now
        emit("error", message=f"cannot start ranks on {host}: {error}")
        link.request_stop("error")
    if relay is not None:
        relay.finish(link.grace_s)  # every host below has said "done" (or is given up) before this one does
    exits = reporter.exits
    failed = any(not rank_exit.ok for rank_exit in exits.values() if not rank_exit.stopped_by_launcher)
    code = 1 if failed or len(exits) < len(group.ranks) else 0
    emit("done", reason=link.stop_reason or "finished", code=code)
    return code


def _exit_fields(rank_exit: Any, group: Any) -> dict:
    return {
        "rank": rank_exit.rank, "code": rank_exit.exit_code, "signal": rank_exit.signal,
        "started": rank_exit.started, "ended": rank_exit.ended, "duration_s": rank_exit.duration_s,
        "stopped": rank_exit.stopped_by_launcher, "tail": group.log_tail(rank_exit.rank),
    }


def _receive_files(job_dir: Path, heartbeat_timeout_s: float) -> None:
    """This host's files, sent ahead of the protocol on stdin (launcher.remote.file_stream).

    A controller that vanishes mid-way without closing the connection would leave the read
    waiting for ever: SIGALRM (whose default ends the process) bounds it.
    """
    from launcher.remote.file_stream import receive_files

    signal.alarm(int(max(60.0, 2 * heartbeat_timeout_s)))
    try:
        receive_files(sys.stdin.buffer, job_dir)
    finally:
        signal.alarm(0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m launcher.remote.agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--job-dir", required=True, type=Path, help="the job dir (same path on every host)")
    parser.add_argument("--host", required=True, help="this host's name in job.json")
    parser.add_argument("--job-file", default="job.json", metavar="PATH",
                        help="the job document to run, relative to the job dir (the controller sends the host's slice)")
    parser.add_argument("--relay", metavar="PATH",
                        help="relay spec inside the job dir: also start, watch and stop the agents of the hosts it names")
    parser.add_argument("--heartbeat-timeout", type=float, default=30.0,
                        help="stop the ranks when the controller is silent this long (seconds)")
    parser.add_argument("--grace", type=float, default=5.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--forward-lines", default="", metavar="RANKS",
                        help="comma-separated ranks whose every log line is sent (the controller's --tee)")
    parser.add_argument("--receive-files", action="store_true",
                        help="first read this host's files from stdin (launcher.remote.file_stream) into the job dir")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="set in the agent's environment (inherited by what it starts), e.g. mpirun's ssh options")
    args = parser.parse_args(argv)
    for flag, value in (("--job-file", args.job_file), ("--relay", args.relay)):
        if value is not None and (posixpath.isabs(value) or ".." in value.split("/")):
            parser.error(f"{flag} {value!r}: must be a path inside the job dir")
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--env {item!r}: expected KEY=VALUE")
        os.environ[key] = value
    from launcher.run.orphans import become_subreaper, kill_leftover_children

    link = ControllerLink(args.heartbeat_timeout, grace_s=args.grace)
    become_subreaper()  # whatever escapes a rank's keeper is re-parented here, not to init
    emit = EventWriter(sys.stdout, link)

    def on_signal(number: int, _frame: object) -> None:
        link.request_stop("signal")

    for number in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(number, on_signal)
    job_dir = args.job_dir.resolve()
    try:
        if args.receive_files:
            _receive_files(job_dir, args.heartbeat_timeout)
        os.chdir(job_dir)
        threading.Thread(target=link.listen, args=(sys.stdin,), daemon=True, name="controller-link").start()
        forward = frozenset(int(rank) for rank in args.forward_lines.split(",") if rank.strip())
        return run_agent(job_dir, args.host, link, emit, forward_ranks=forward, job_file=args.job_file,
                         relay_file=args.relay)
    except (OSError, ValueError, KeyError) as error:  # JobFileError is a ValueError
        # Files that could not be received or written, a job.json this agent cannot read: say so, stop.
        emit("error", message=f"agent on {args.host}: {type(error).__name__}: {error}")
        emit("done", reason="error", code=2)
        return 2
    finally:
        kill_leftover_children()
        emit.close()


if __name__ == "__main__":
    sys.exit(main())
