"""The controller's work per host is constant (issue 18): checked by counting, never by timing.

The launches here run the real controller (run_job -> the ssh backend's groups, the host
slices, the bounded pool, RemoteHostGroup, AgentSession, the supervisor) against simulated
hosts (tests/fixtures/sim_hosts.py): only the network is missing. Speed is bench/scale.py's.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading

import paramiko
import pytest

from launcher.job.options import LaunchOptions
from launcher.remote.host_slice import host_job_file
from launcher.remote.known_hosts import KnownHosts, shared_known_hosts
from launcher.run.supervisor import Interrupt
from launcher.run_job import run_job
from tests.fixtures.sim_hosts import SimCluster


def _sim_launch(tmp_path, hosts: int, devices: int = 2, parallel: int = 64, monkeypatch=None, tree_width: int = 0,
                connect_latency_s: float = 0.0, end: str = "fail", while_up=None, **launch_options):
    """One launch over ``hosts`` simulated hosts, ended once every rank is up by a failure of the
    last rank (``end`` "fail") or Ctrl-C ("ctrl-c"); the controller starts every agent itself
    unless ``tree_width`` says otherwise. ``while_up()``: called once every agent is up, before the
    end. The job dir is job-<end>-<hosts>."""
    import launcher.job.render as render_module
    import launcher.launch as launch_module

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    from scale import _sim_backend  # the bench's backend: the ssh backend with the sim transport

    renders = []
    real_render = render_module.render_job

    def counting_render(plan):
        renders.append(plan.rank_size)
        return real_render(plan)

    monkeypatch.setattr(render_module, "render_job", counting_render)
    monkeypatch.setattr(launch_module, "render_job", counting_render)
    cluster = SimCluster(connect_latency_s=connect_latency_s)
    options = LaunchOptions(hosts=",".join(f"sim-{i}" for i in range(hosts)), platform="CPU", devices=devices,
                            job_dir=tmp_path / f"job-{end}-{hosts}", tee="none", status_interval_s=3600.0,
                            ssh_parallel=parallel, ssh_tree_width=tree_width, python=sys.executable,
                            **launch_options)
    backend = _sim_backend(cluster, options, hosts, devices)
    interrupt = Interrupt()

    def fail_when_up() -> None:
        for _ in range(2000):
            if sum(1 for host in cluster.hosts.values() if host.agent is not None) == hosts:
                if while_up is not None:
                    while_up()
                if end == "fail":
                    cluster.fail_rank(hosts * devices - 1)
                else:
                    interrupt.trigger(signal.SIGINT)
                return
            threading.Event().wait(0.01)
        interrupt.trigger(signal.SIGINT)  # never all up: end the launch, the asserts say why

    threading.Thread(target=fail_when_up, daemon=True, name="sim-test-ender").start()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            result = run_job(options, backend, interrupt=interrupt)
    finally:
        cluster.close()
    return result, cluster, renders


@pytest.mark.parametrize("hosts", [3, 24])
def test_one_render_per_start_and_every_agent_reads_only_its_slice(tmp_path, monkeypatch, hosts):
    result, cluster, renders = _sim_launch(tmp_path, hosts, monkeypatch=monkeypatch)
    assert result.exit_code == 1 and result.first_failure.rank == hosts * 2 - 1  # fail-fast went through
    assert renders == [hosts * 2]  # the whole plan rendered once, for the controller's own job dir
    assert len(cluster.hosts) == hosts and all(host.agent is not None for host in cluster.hosts.values())
    job_dir = str(tmp_path / f"job-fail-{hosts}")
    for index in range(hosts):
        host = cluster.hosts[f"sim-{index}"]
        assert host.agent.ranks == (2 * index, 2 * index + 1)
        pushed = sorted(path[len(job_dir) + 1:] for path in host.files)
        expected = [host_job_file(index), f"LOG{2 * index}/env.sh", f"LOG{2 * index}/run.sh",
                    f"LOG{2 * index + 1}/env.sh", f"LOG{2 * index + 1}/run.sh"]
        if index == 0:
            expected.append("scheduler/run.sh")
        assert pushed == sorted(expected)  # never job.json, never another host's scripts
        assert host.connections == 1  # pre-flight's connection and session carried on as the agent


@pytest.mark.parametrize("end, tree_width", [("fail", 0), ("ctrl-c", 0), ("fail", 16)])
def test_an_idle_second_costs_one_sweep_of_the_hosts_not_a_poll_every_tick(tmp_path, monkeypatch, end, tree_width):
    """200 hosts, every rank up and quiet (each agent still says "alive" every second): the supervisor
    visits each host once a second (its sweep) and the hosts that said something, where polling would
    be 50 visits a second each; then a failure (an event that wakes it, through a relay too) or
    Ctrl-C still ends the job."""
    import collections

    from launcher.remote.group import RemoteHostGroup
    from launcher.run.activity import Activity

    hosts = 200
    visits: collections.Counter = collections.Counter()
    noted: list[str] = []
    real_observe, real_note = RemoteHostGroup._observe, Activity.note

    def counting_observe(group):
        visits[group.host] += 1
        return real_observe(group)

    def recording_note(activity, group):
        noted.append(group.host)
        real_note(activity, group)

    monkeypatch.setattr(RemoteHostGroup, "_observe", counting_observe)
    monkeypatch.setattr(Activity, "note", recording_note)
    window: dict = {}

    def idle_window() -> None:
        waiting, seen, quiet = threading.Event(), -1, 0
        while quiet < 5 and not waiting.wait(0.1):  # every host's first events taken: 0.5 s without news
            quiet, seen = (quiet + 1, seen) if len(noted) == seen else (0, len(noted))
        visits_before, notes_before = sum(visits.values()), len(noted)
        waiting.wait(2.0)
        window.update(visits=sum(visits.values()) - visits_before, notes=len(noted) - notes_before, end=len(noted))

    result, cluster, _ = _sim_launch(tmp_path, hosts, monkeypatch=monkeypatch, end=end, tree_width=tree_width,
                                     while_up=idle_window)
    if end == "fail":
        assert result.exit_code == 1 and result.first_failure.rank == hosts * 2 - 1
        assert f"sim-{hosts - 1}" in noted[window["end"]:]  # its exit woke the supervisor (relayed: via its relay)
    else:
        assert result.exit_code == 130
    assert window["notes"] == 0  # "alive" is no news
    # Sweeps a second apart (two in 2 s, and parts of those at the window's ends), nothing else: polling
    # every 20 ms would be ~20,000.
    assert hosts <= window["visits"] <= 3 * hosts, window


def test_bytes_sent_to_a_host_do_not_grow_with_the_host_count(tmp_path, monkeypatch):
    few = _sim_launch(tmp_path, 2, monkeypatch=monkeypatch)[1]
    many = _sim_launch(tmp_path, 40, monkeypatch=monkeypatch)[1]
    # Host 1 runs ranks 2 and 3 in both jobs; only numbers such as the rank count (4 vs 80) and
    # the job dir's name differ in what it gets: a few bytes, not a share of the job.
    small, big = few.hosts["sim-1"].bytes_received, many.hosts["sim-1"].bytes_received
    assert small > 1000
    assert abs(big - small) < 100, (small, big)
    middle = [many.hosts[f"sim-{index}"].bytes_received for index in range(1, 40)]
    assert max(middle) - min(middle) < 100  # every host alike, the 40th as cheap as the 2nd


def test_the_pool_bounds_connections_being_set_up(tmp_path, monkeypatch):
    # Each handshake waits 20 ms (as a network would), so the pool's connections overlap.
    result, cluster, _ = _sim_launch(tmp_path, 12, parallel=3, monkeypatch=monkeypatch, connect_latency_s=0.02)
    assert result.exit_code == 1
    assert cluster.max_setting_up == 3  # never more connects/copies/starts in flight than --ssh-parallel
    assert cluster.open_connections == 0  # every connection closed at the end


def test_a_host_job_document_is_job_json_schema_with_one_host(tmp_path, monkeypatch):
    """The slice the agent reads: load_job's strict reader takes it, and its plan is the host's ranks only."""
    from launcher.job.job_record import load_job

    captured = {}
    import tests.fixtures.sim_hosts as sim

    real_begin = sim.SimAgent._begin

    def keep_document(self):  # what the fake agent received down its channel, before it reads it
        for path, text in self.host.documents.items():
            captured.setdefault(self.host.name, (path, text))
        real_begin(self)

    monkeypatch.setattr(sim.SimAgent, "_begin", keep_document)
    _sim_launch(tmp_path, 4, monkeypatch=monkeypatch)
    path, text = captured["sim-2"]
    assert path.endswith(host_job_file(2))
    document = json.loads(text)
    assert [host["name"] for host in document["hosts"]] == ["sim-2"]
    assert document["host_slice"] == {"host": "sim-2", "job_rank_size": 8}
    (tmp_path / "copy" / "agents").mkdir(parents=True)
    (tmp_path / "copy" / host_job_file(2)).write_text(text)
    plan = load_job(tmp_path / "copy", host_job_file(2)).plan()
    assert [rank.rank for rank in plan.ranks] == [4, 5] and plan.host_slice == "sim-2"
    assert plan.ranks[0].env["RANK_SIZE"] == "8"  # the job's size reaches the ranks, not the slice's


def test_the_agent_refuses_a_job_file_outside_the_job_dir_and_a_fifo(tmp_path):
    """In a process of its own: the agent makes itself a subreaper and kills what it leaves behind."""
    import subprocess

    def agent(job_file: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher.remote.agent", "--job-dir", str(tmp_path),
                               "--host", "h", "--job-file", job_file], input="", capture_output=True, text=True,
                              timeout=60)

    outside = agent("../job.json")
    assert outside.returncode == 2
    assert "--job-file '../job.json': must be a path inside the job dir" in outside.stderr
    (tmp_path / "agents").mkdir()
    os.mkfifo(tmp_path / host_job_file(0))  # a FIFO would block a plain open() for ever
    fifo = agent(host_job_file(0))
    assert fifo.returncode == 2
    assert "not a regular file" in fifo.stdout and '"event":"done"' in fifo.stdout


def _host_key_line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}"


def test_known_hosts_are_read_once_and_found_by_name_hashed_or_with_a_port(tmp_path):
    keys = [paramiko.Ed25519Key.from_private_key_file(str(_ed25519(tmp_path, i))) for i in range(3)]
    hashed = paramiko.HostKeys.hash_host("10.0.0.7")
    lines = ["# a comment", "", "garbage line", _host_key_line("10.0.0.1,alias-1", keys[0]),
             _host_key_line(hashed, keys[1]), _host_key_line("[10.0.0.9]:2222", keys[2])]
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    known = shared_known_hosts(path)
    assert shared_known_hosts(path) is known  # parsed once, shared by every connection
    assert known.lookup("alias-1")["ssh-ed25519"] == keys[0]
    assert known.lookup("10.0.0.7")["ssh-ed25519"] == keys[1]
    assert known.lookup("[10.0.0.9]:2222")["ssh-ed25519"] == keys[2]
    assert known.lookup("10.0.0.9") is None and known.lookup("10.0.0.2") is None
    assert known.check("10.0.0.1", keys[0]) and not known.check("10.0.0.1", keys[1])
    # paramiko's own reader agrees on every name
    reference = paramiko.HostKeys(str(path))
    for name in ("alias-1", "10.0.0.7", "[10.0.0.9]:2222", "10.0.0.2"):
        assert (reference.lookup(name) is None) == (known.lookup(name) is None)
    path.write_text(_host_key_line("10.0.0.2", keys[0]) + "\n")  # replaced: read again
    assert shared_known_hosts(path).lookup("10.0.0.2") is not None


def test_a_known_hosts_fifo_is_one_line_not_a_hang(tmp_path):
    fifo = tmp_path / "known_hosts"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="known_hosts file .*cannot read"):
        shared_known_hosts(fifo)
    assert isinstance(KnownHosts(), paramiko.HostKeys)


def _ed25519(tmp_path, index: int):
    import subprocess

    path = tmp_path / f"key{index}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.mark.parametrize("tool, value", [("launcher.cli", "0"), ("launcher.cli", "2000"),
                                         ("launcher.collect.cli", "0"), ("launcher.collect.cli", "1025")])
def test_a_bad_ssh_parallel_is_one_line_and_exit_2(tmp_path, tool, value):
    import subprocess

    job_dir = tmp_path / "job"
    extra = ["--hosts", "a,b", "--job-dir", str(job_dir)] if tool == "launcher.cli" else [str(tmp_path)]
    done = subprocess.run([sys.executable, "-m", tool, "--ssh-parallel", value, *extra], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"{'launch-train: error' if tool == 'launcher.cli' else 'collect-results'}: --ssh-parallel {value}: "
        "must be a whole number from 1 to 1024"]
    assert not job_dir.exists()


def test_collect_results_reads_at_most_ssh_parallel_hosts_at_once(tmp_path):
    from launcher.collect.gather import gather
    from launcher.collect.hashing import HashCache
    from launcher.job.job_record import parse_job

    hosts = [{"name": f"h{i}", "address": f"10.0.0.{i}", "port": 22} for i in range(12)]
    job = parse_job({"schema": 1, "job_id": "j", "job_dir": str(tmp_path / "job"), "hosts": hosts,
                     "ranks": [{"rank": i, "host": f"h{i}", "log_dir": f"LOG{i}"} for i in range(12)]})
    lock = threading.Lock()
    in_flight, most, opened = [0], [0], []
    enough = threading.Event()

    def open_files(plan):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            opened.append(plan.host.name if plan.host else None)
            if in_flight[0] >= 3:
                enough.set()
        enough.wait(1.0)  # hold the slot until the pool is full, so a pool bigger than 3 would show
        with lock:
            in_flight[0] -= 1
        raise ConnectionError("unreachable (test)")

    result = gather(job, tmp_path / "stage", open_files, HashCache(None), parallel=3)
    assert most[0] == 3
    assert sorted(name for name in opened if name) == sorted(f"h{i}" for i in range(12))
    assert sum(1 for host in result.hosts if host.error) == 13  # every host (and the job dir) reported, none lost


def test_the_open_files_limit_is_raised_for_many_hosts_or_refused_in_one_line():
    import resource

    from launcher.remote.channel_hub import FDS_PER_HOST, FDS_RESERVE, ensure_fd_budget

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
        hosts = (min(hard, 8192) - FDS_RESERVE) // FDS_PER_HOST
        ensure_fd_budget(hosts)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= hosts * FDS_PER_HOST + FDS_RESERVE
        if hard != resource.RLIM_INFINITY:
            with pytest.raises(ValueError, match=r"--hosts: \d+ hosts need about \d+ open files"):
                ensure_fd_budget(hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
