"""The per-host agent on its own (no SSH): protocol, and that it never outlives its controller."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher.job.ports import free_port
from tests.fixtures.processes import read_until

from launcher.job.job_json import plan_from_job_document
from launcher.remote.protocol import decode_event, encode_event, progress_event
from launcher.job.hosts import Host
from launcher.launch import prepare, write_job_files
from launcher.job.spec import Entry, JobSpec

SLEEPER = '''\
import os, time
with open("pid", "w") as out:
    out.write(str(os.getpid()))
print("hello from rank", os.environ["RANK_ID"], flush=True)
print("epoch: 1 step: 7, loss is 0.125", flush=True)
time.sleep(float(os.environ.get("SLEEP", "60")))
'''


def test_events_round_trip_and_noise_is_ignored():
    line = encode_event("exited", rank=3, code=None, signal=9, tail="a\nb")
    assert decode_event(line + "\n") == {"event": "exited", "rank": 3, "code": None, "signal": 9, "tail": "a\nb"}
    assert decode_event("Welcome to Debian!") is None  # a login banner or a shell's chatter
    assert decode_event('{"event": "bogus"}') is None
    assert decode_event("{not json") is None
    with pytest.raises(ValueError):
        encode_event("bogus")


def test_progress_lines_become_events():
    assert progress_event(2, "epoch: 3 step: 40, loss is 0.25") == {
        "rank": 2, "epoch": 3, "step": 40, "loss": 0.25, "line": "epoch: 3 step: 40, loss is 0.25"}
    assert progress_event(2, "Epoch time: 78748.379, per step time: 107.378")["line"].startswith("Epoch time")
    assert progress_event(2, "[WARNING] something else") is None


@pytest.fixture
def two_rank_job(tmp_path):
    """A written job dir (job.json + scripts) whose two ranks both run on host "node-a"."""
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    spec = JobSpec(
        job_id="agent-test", job_dir=tmp_path / "job", created="2026-01-01T00:00:00.000Z",
        hosts=(Host(name="node-a", address="127.0.0.1", local=False),), devices=(0, 1), platform="CPU",
        mode="dynamic", entry=Entry(script=script), python=sys.executable,
        env={"SLEEP": "60"}, sched_port=free_port(), bind_cores=False,
    )
    plan, files = prepare(spec)
    # The agent starts the scheduler too (first host), and the workers once it listens: a stand-in
    # that listens on the scheduler's port and waits to be stopped.
    write_job_files(plan, files)
    (tmp_path / "job" / "scheduler" / "run.sh").write_text(
        "#!/usr/bin/env bash\n"
        f"exec {shlex.quote(sys.executable)} -c 'import socket, time; s = socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind((\"127.0.0.1\", {spec.sched_port})); s.listen(); time.sleep(60)'\n")
    yield tmp_path / "job"
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("LAUNCH_TRAIN_JOB_DIR") == str(tmp_path / "job"):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def test_plan_is_rebuilt_from_job_json(two_rank_job):
    document = json.loads((two_rank_job / "job.json").read_text())
    plan = plan_from_job_document(document)
    assert [r.rank for r in plan.ranks_on("node-a")] == [0, 1]
    assert plan.ranks[1].env["MS_NODE_ID"] == "1"
    assert plan.scheduler is not None and plan.scheduler.host == "node-a"


def _agent(job_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "launcher.remote.agent", "--job-dir", str(job_dir), "--host", "node-a", "--grace", "1", *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _read_until(agent: subprocess.Popen, predicate, timeout: float = 30) -> list[dict]:
    """Events until ``predicate`` holds; never waits past ``timeout``."""
    events: list[dict] = []

    def done(line: str) -> bool:
        event = decode_event(line)
        if event is None:
            return False
        events.append(event)
        return bool(predicate(event, events))

    if read_until(agent, done, timeout)[0]:
        return events
    agent.kill()
    agent.wait(timeout=10)
    raise AssertionError(f"agent did not report as expected; got {events}; stderr {agent.stderr.read()[-2000:]}")


def _rank_pids(job_dir: Path) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        files = [job_dir / f"LOG{r}" / "pid" for r in (0, 1)]
        if all(f.exists() and f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.05)
    raise AssertionError("ranks did not start")


def _all_gone(pids: list[int], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_stop_line_stops_the_ranks_and_reports_them(two_rank_job):
    agent = _agent(two_rank_job)
    try:
        _read_until(agent, lambda e, _: e["event"] == "progress")
        pids = _rank_pids(two_rank_job)
        agent.stdin.write("stop 1\n")
        agent.stdin.flush()
        events = _read_until(agent, lambda e, _: e["event"] == "done")
        assert events[-1] == {"event": "done", "reason": "stop-requested", "code": 0}  # stopped is not failed
        stopped = {e["rank"] for e in events if e["event"] == "exited" and e["stopped"]}
        assert stopped == {0, 1}
        assert _all_gone(pids)
        assert agent.wait(timeout=10) == 0
    finally:
        agent.kill()


def test_closed_stdin_means_the_controller_is_gone(two_rank_job):
    agent = _agent(two_rank_job)
    try:
        _read_until(agent, lambda e, _: e["event"] == "started")
        pids = _rank_pids(two_rank_job)
        agent.stdin.close()  # what the agent sees when the SSH session or the controller dies
        events = _read_until(agent, lambda e, _: e["event"] == "done")
        assert events[-1]["reason"] == "controller-lost"
        assert _all_gone(pids)
    finally:
        agent.kill()


def test_silent_controller_hits_the_heartbeat_timeout(two_rank_job):
    agent = _agent(two_rank_job, "--heartbeat-timeout", "1.5")
    try:
        _read_until(agent, lambda e, _: e["event"] == "started")
        pids = _rank_pids(two_rank_job)
        # stdin stays open but nothing arrives: a connection that died without closing.
        events = _read_until(agent, lambda e, _: e["event"] == "done")
        assert events[-1]["reason"] == "controller-lost"
        assert _all_gone(pids)
    finally:
        agent.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_the_ranks(two_rank_job, signum):
    agent = _agent(two_rank_job)
    try:
        _read_until(agent, lambda e, _: e["event"] == "started")
        pids = _rank_pids(two_rank_job)
        os.kill(agent.pid, signum)
        events = _read_until(agent, lambda e, _: e["event"] == "done")
        assert events[-1]["reason"] == "signal"
        assert _all_gone(pids)
    finally:
        agent.kill()


def test_agent_for_a_host_without_ranks_says_so(two_rank_job):
    agent = subprocess.run(
        [sys.executable, "-m", "launcher.remote.agent", "--job-dir", str(two_rank_job), "--host", "node-z"],
        input="", capture_output=True, text=True, timeout=30,
    )
    events = [decode_event(line) for line in agent.stdout.splitlines()]
    assert agent.returncode == 2
    assert events[0]["event"] == "error" and "no ranks on host 'node-z'" in events[0]["message"]


def test_forwarded_ranks_send_every_line(two_rank_job):
    agent = _agent(two_rank_job, "--forward-lines", "1")
    try:
        events = _read_until(agent, lambda e, seen: sum(x["event"] == "progress" for x in seen) == 2)
        lines = [(e["rank"], e["line"]) for e in events if e["event"] == "line"]
        assert (1, "hello from rank 1") in lines
        assert all(rank == 1 for rank, _ in lines)  # rank 0 only reports progress
        agent.stdin.write("stop\n")
        agent.stdin.flush()
        _read_until(agent, lambda e, _: e["event"] == "done")
    finally:
        agent.kill()
