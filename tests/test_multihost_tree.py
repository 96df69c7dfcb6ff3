"""A tree start (issue 18): above --ssh-tree-width hosts the controller starts a first tier of agents
(relays), and each relay starts the agents of its part of the hosts (launcher/remote/tree.py, relay.py).

The tree's shape is checked as data; the start through relays runs the real controller and the
real relay code against simulated hosts (tests/fixtures/sim_hosts.py: a fake relay host runs
launcher.remote.relay.Relay itself), counting connections, never timing; and real sshd hosts run a
chain (--ssh-tree-width 1: the controller starts 127.0.0.2's agent, which starts 127.0.0.3's).
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.remote.host_slice import host_job_file
from launcher.remote.relay import RelaySpec
from launcher.remote.tree import plan_tree
from tests.test_multihost_scale import _sim_launch
from tests.test_multihost_launch import assert_nothing_left, cluster, launch_args  # noqa: F401 (fixture)
from tests.test_multihost_spares import PAYLOAD, _agent_of, _run_until_steps

REPO = Path(__file__).resolve().parents[1]


# -- the tree's shape ------------------------------------------------------------------------------
@pytest.mark.parametrize("hosts, width", [(1, 32), (32, 32), (33, 32), (100, 4), (1024, 32), (4096, 32), (10, 3),
                                          (5, 1), (7, 0)])
def test_every_host_is_started_once_by_a_host_before_it_and_no_host_starts_more_than_width(hosts, width):
    tree = plan_tree(list(range(hosts)), width)
    below = [index for children in tree.children.values() for index in children]
    assert sorted([*tree.roots, *below]) == list(range(hosts))  # each host exactly once
    if width:
        assert len(tree.roots) <= width and all(len(children) <= width for children in tree.children.values())
    for index, parent in tree.parent.items():
        assert parent < index and index in tree.children[parent]  # a relay comes before what it starts
        assert tree.root_of(index) in tree.roots
    for index in tree.roots:  # a root's subtree is the contiguous run of hosts up to the next root
        after = [root for root in tree.roots if root > index]
        assert list(tree.subtree(index)) == list(range(index + 1, after[0] if after else hosts))
    if hosts <= width or width == 0:
        assert not tree.parent and tree.depth == (1 if hosts else 0)


def test_the_depth_grows_as_a_logarithm_of_the_host_count():
    assert plan_tree(list(range(1024)), 32).depth == 2
    assert plan_tree(list(range(4096)), 32).depth == 3
    assert plan_tree(list(range(5)), 1).depth == 5  # width 1: a chain
    line = plan_tree(list(range(1024)), 32).describe()
    assert line.startswith("SSH start: a tree of depth 2: the controller starts 32 hosts' agents; 32 relay hosts "
                           "start the other 992")


def test_without_a_width_there_is_no_tree_up_to_64_hosts_and_a_tree_of_32_above():
    """A tree of 64 would give each of 32 relays one host: a hop and a relay's imports, little saved."""
    assert plan_tree(list(range(64))).roots == tuple(range(64))
    above = plan_tree(list(range(65)))
    assert len(above.roots) == 32 and above.depth == 2
    assert plan_tree(list(range(1024))) == plan_tree(list(range(1024)), 32)
    assert plan_tree([0, 1], 1).depth == 2  # a width given is a tree above it, whatever the host count


@pytest.mark.parametrize("width", [-1, 1025, True, 2.5])
def test_a_bad_tree_width_is_refused(width):
    with pytest.raises(ValueError, match="--ssh-tree-width"):
        plan_tree([0, 1], width)


def test_a_bad_tree_width_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "--ssh-tree-width", "-3", "--job-dir",
                           str(tmp_path / "job"), "--dry-run", "--", "x"], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert done.returncode == 2 and not (tmp_path / "job").exists()
    assert done.stderr.strip().splitlines() == [
        "launch-train: error: --ssh-tree-width -3: must be a whole number from 0 (no tree) to 1024"]


def test_a_relay_spec_that_is_not_what_the_controller_writes_is_one_line():
    with pytest.raises(ValueError, match=r"relay spec: children\[0\]: missing 'forward_ranks'"):
        RelaySpec.from_json({"relay": 0, "job_dir": "/j", "remote_python": "python", "heartbeat_s": 2,
                             "heartbeat_timeout_s": 30, "ssh": {}, "job_wide": [],
                             "children": [{"index": 1, "host": "h", "hostname": "h"}]})
    with pytest.raises(ValueError, match="'job_wide' must list file names"):
        RelaySpec.from_json({"relay": 0, "job_dir": "/j", "remote_python": "python", "heartbeat_s": 2,
                             "heartbeat_timeout_s": 30, "ssh": {}, "job_wide": ["../x"], "children": []})


# -- through relays, simulated hosts ------------------------------------------------------------------
def _tree_launch(tmp_path, hosts: int, width: int, end: str, monkeypatch, **options):
    result, cluster, _renders = _sim_launch(tmp_path, hosts, monkeypatch=monkeypatch, tree_width=width, end=end,
                                            **options)
    return result, cluster


def _assert_each_host_started_by_its_relay_with_its_slice(cluster, tree, hosts: int, job_dir: str) -> None:
    """Every host's agent ran its two ranks and was stopped; its relay started it; it got its own slice."""
    for index in range(hosts):
        host = cluster.hosts[f"sim-{index}"]
        assert host.agent is not None and host.agent.ranks == (2 * index, 2 * index + 1) and host.agent.done
        parent = tree.parent.get(index)
        assert host.via == (None if parent is None else f"sim-{parent}")  # started by its relay
        # The controller's pre-flight session carried on as the agent of a first-tier host; a host
        # below a relay was pre-flighted by the controller, then connected to by its relay.
        assert host.connections == (1 if parent is None else 2)
        # Each host got its own slice at the real paths; what it staged for others it sent on.
        own = {path[len(job_dir) + 1:] for path in host.files if "/relay/" not in path}
        expected = {host_job_file(index), *(f"LOG{r}/{name}" for r in (2 * index, 2 * index + 1)
                                            for name in ("env.sh", "run.sh"))}
        if index == 0:
            expected.add("scheduler/run.sh")
        if tree.children.get(index):
            expected.add(f"agents/relay-{index}.json")
        assert own == expected
        assert not [path for path in host.documents if "/relay/" in path]  # staging removed once sent


def test_the_controller_connects_only_to_the_first_tier_and_a_failure_deep_in_the_tree_fails_fast(tmp_path, monkeypatch):
    hosts, width = 40, 4
    tree = plan_tree(list(range(hosts)), width)
    assert tree.depth == 3
    result, cluster = _tree_launch(tmp_path, hosts, width, "fail", monkeypatch)
    assert result.exit_code == 1 and result.first_failure.rank == hosts * 2 - 1  # the last host: depth 3
    assert result.first_failure.host == f"sim-{hosts - 1}"
    assert cluster.max_agent_connections == width  # the agents the controller holds: the first tier
    assert cluster.open_connections == 0
    job_dir = str(tmp_path / f"job-fail-{hosts}")
    _assert_each_host_started_by_its_relay_with_its_slice(cluster, tree, hosts, job_dir)
    status = json.loads((tmp_path / f"job-fail-{hosts}" / "job.json").read_text())["status"]
    assert status["state"] == "failed" and not status.get("excluded_hosts")  # nobody blamed but the rank


def test_ctrl_c_stops_every_agent_of_the_tree(tmp_path, monkeypatch):
    result, cluster = _tree_launch(tmp_path, 12, 3, "ctrl-c", monkeypatch)
    assert result.exit_code == 130
    assert all(host.agent is not None and host.agent.done for host in cluster.hosts.values())
    assert cluster.open_connections == 0


def test_a_host_its_relay_cannot_reach_is_the_lost_host_not_its_relay(tmp_path, monkeypatch):
    """Width 2 over 8 hosts: sim-4 (the controller's) starts sim-5, which starts sim-6; sim-5 refuses."""
    from tests.fixtures import sim_hosts

    refused = {"sim-5": 1}
    real_open = sim_hosts.SimConnection.open

    def open_or_refuse(self):
        if self.via is not None and refused.get(self.host.name):
            refused[self.host.name] -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        real_open(self)

    monkeypatch.setattr(sim_hosts.SimConnection, "open", open_or_refuse)
    tree = plan_tree(list(range(8)), 2)
    assert tree.parent[5] == 4 and tree.parent[6] == 5 and 4 in tree.roots
    result, cluster = _tree_launch(tmp_path, 8, 2, "fail", monkeypatch, max_restarts=1)
    status = json.loads((tmp_path / "job-fail-8" / "job.json").read_text())["status"]
    first = status["attempts"][0]
    assert list(first["lost_hosts"]) == ["sim-5"], first  # the host, not its relay
    assert "could not start its agent from relay host" in first["lost_hosts"]["sim-5"]


@pytest.mark.parametrize("end", ["fail", "ctrl-c"])
def test_relay_hosts_in_processes_of_their_own_start_their_subtrees_and_stop_with_the_job(tmp_path, end):
    """bench/scale.py's process mode: each of the 4 first-tier relays is a process (with its subtree),
    as on a machine of its own; a failure two hops below one of them, or Ctrl-C, stops them all."""
    import psutil

    sys.path.insert(0, str(REPO / "bench"))
    from scale import _sim_run

    hosts, width = 40, 4
    tree = plan_tree(list(range(hosts)), width)
    assert tree.depth == 3 and len(tree.roots) == width
    figures, cluster = _sim_run(hosts, 2, 0.0, 64, end, tmp_path, width, relay_processes=True, idle_window_s=0.0,
                                deadline_s=60.0)
    assert figures["exit_code"] == (1 if end == "fail" else 130), figures
    if end == "fail":
        assert figures["first_failure"] == [hosts * 2 - 1, f"sim-{hosts - 1}"], figures  # depth 3
    # Pre-flight reached all 40 hosts; the controller's agents are the first tier's, in their processes.
    assert figures["relay_processes"] == width and cluster.max_agent_connections == width
    assert figures["agents_started"] == hosts and figures["first_line_s"] is not None
    assert figures["host_cpu_s"] < 0.5  # only pre-flight's probes ran here: every agent in a relay host's process
    # Nothing left: each relay host's process ended by itself (its stdin closed), none was killed.
    assert [process.process.returncode for process in cluster.processes] == [0] * width
    left = [child for child in psutil.Process().children(recursive=True) if "sim_relay_host" in " ".join(child.cmdline())]
    assert not left
    assert not cluster._process_dir.exists()  # their FIFOs and reports
    job_dir = str(tmp_path / f"job-{end}")
    _assert_each_host_started_by_its_relay_with_its_slice(cluster, tree, hosts, job_dir)  # whichever process


# -- real sshd: a chain of two hosts -------------------------------------------------------------------
CHAIN = ["--hosts", "root@127.0.0.2,root@127.0.0.3", "--platform", "CPU", "--ssh-tree-width", "1"]


def test_a_relay_starts_the_next_host_and_its_lines_and_failure_come_up_through_it(cluster):
    done = subprocess.run(launch_args(cluster, *CHAIN, "--tee", "1", "--entry", PAYLOAD, "--",
                                      "--steps", "30", "--step-time", "0.05", "--fail-rank", "1"),
                          capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "[127.0.0.3:1] epoch: 1 step: 30" in done.stdout  # --tee of a rank two hops away
    assert "rank 1 on 127.0.0.3 failed (exit code 1)" in done.stderr
    job_dir = cluster["job_dir"]
    assert (job_dir / "agents" / "relay-0.json").is_file() and not (job_dir / "relay").exists()
    status = json.loads((job_dir / "job.json").read_text())["status"]
    assert status["state"] == "failed" and not status.get("excluded_hosts")


def test_a_lost_relay_is_the_lost_host_and_the_job_goes_on_without_it(cluster):
    job_dir = cluster["job_dir"]
    proc = _run_until_steps(cluster, [*CHAIN, "--min-hosts", "1", "--max-restarts", "1", "--entry", PAYLOAD,
                                      "--tee", "none", "--", "--steps", "40", "--step-time", "0.1"], "127.0.0.2")
    # Both agents run on this machine; the relay's is the one the controller started.
    _agent_of(job_dir, "--host 127.0.0.2").kill()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    status = json.loads((job_dir / "job.json").read_text())["status"]
    first, second = status["attempts"]
    assert list(first["lost_hosts"]) == ["127.0.0.2"]  # the host below it stopped with it, not blamed
    assert [h["host"] for h in status["excluded_hosts"]] == ["127.0.0.2"]
    assert second["hosts"] == ["127.0.0.3"] and second["state"] == "succeeded"
    assert_nothing_left(job_dir)
