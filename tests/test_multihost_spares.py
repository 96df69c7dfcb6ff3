"""A lost host costs a restart, not the job: real sshd hosts, a host whose agent is killed mid-run.

127.0.0.2 runs the job; 127.0.0.3 waits as a spare (--spare-hosts). Killing 127.0.0.2's agent
(its ranks die with it) is what the controller sees when a machine dies: the connection closes.
The host is excluded, recorded in job.json, and the next attempt runs on the spare; without a
spare, --min-hosts decides whether the job goes on with fewer hosts. A rank's own failure is no
host's: the job restarts on the same hosts.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.test_multihost_launch import assert_nothing_left, cluster, launch_args  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")


def _agent_of(job_dir: Path, host: str):
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "launcher.remote.agent" in " ".join(cmdline) and str(job_dir) in cmdline and host in " ".join(cmdline):
            return proc
    return None


def _run_until_steps(cluster, args: list[str], host: str, timeout: float = 90.0) -> subprocess.Popen:
    proc = subprocess.Popen(launch_args(cluster, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, stdin=subprocess.DEVNULL)
    log = cluster["job_dir"] / "LOG0" / "log.txt"
    deadline = time.monotonic() + timeout
    while not (log.exists() and "step: 3," in log.read_text() and _agent_of(cluster["job_dir"], host)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    return proc


def test_a_lost_host_is_replaced_by_a_spare_and_the_job_finishes(cluster):
    job_dir = cluster["job_dir"]
    proc = _run_until_steps(cluster, ["--hosts", "root@127.0.0.2", "--spare-hosts", "root@127.0.0.3",
                                      "--platform", "CPU", "--max-restarts", "2", "--heartbeat-timeout", "10",
                                      "--entry", PAYLOAD, "--tee", "none", "--",
                                      "--steps", "25", "--step-time", "0.1"], "127.0.0.2")
    _agent_of(job_dir, "127.0.0.2").kill()  # the host "dies": its agent, and with it its ranks
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    document = json.loads((job_dir / "job.json").read_text())
    status = document["status"]
    assert status["state"] == "succeeded" and status["restarts"] == 1
    assert [h["name"] for h in document["hosts"]] == ["127.0.0.3"]  # the final plan runs on the spare
    (excluded,) = status["excluded_hosts"]
    assert excluded["host"] == "127.0.0.2" and excluded["reason"] and excluded["at"]
    (spare,) = status["spare_hosts"]
    assert spare["host"] == "127.0.0.3" and spare["replaces"] == "127.0.0.2"
    first, second = status["attempts"]
    assert first["hosts"] == ["127.0.0.2"] and first["state"] == "failed" and "127.0.0.2" in first["lost_hosts"]
    assert second["hosts"] == ["127.0.0.3"] and second["state"] == "succeeded"
    record = json.loads((job_dir / "LOG0" / "record.json").read_text())
    assert record["env"]["LAUNCH_TRAIN_RESTART_COUNT"] == "1" and record["env"]["SSH_CONNECTION"].split()[2] == "127.0.0.3"


def test_without_a_spare_min_hosts_goes_on_with_fewer_hosts(cluster):
    job_dir = cluster["job_dir"]
    proc = _run_until_steps(cluster, ["--hosts", "root@127.0.0.2,root@127.0.0.3", "--min-hosts", "1",
                                      "--platform", "CPU", "--max-restarts", "2", "--entry", PAYLOAD, "--tee", "none",
                                      "--", "--steps", "25", "--step-time", "0.1"], "127.0.0.3")
    _agent_of(job_dir, "127.0.0.3").kill()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    document = json.loads((job_dir / "job.json").read_text())
    assert [h["name"] for h in document["hosts"]] == ["127.0.0.2"] and document["rank_size"] == 1
    assert document["status"]["excluded_hosts"][0]["host"] == "127.0.0.3"
    assert document["status"]["spare_hosts"] == []
    # The job's first rank count goes to the program, which keeps its global batch on fewer ranks.
    assert document["ranks"][0]["env"]["LAUNCH_TRAIN_PLANNED_RANKS"] == "2"


def test_a_lost_host_with_no_spare_and_no_min_hosts_ends_the_job_with_the_reason(cluster):
    job_dir = cluster["job_dir"]
    proc = _run_until_steps(cluster, ["--hosts", "root@127.0.0.2,root@127.0.0.3", "--platform", "CPU",
                                      "--max-restarts", "2", "--entry", PAYLOAD, "--tee", "none",
                                      "--", "--steps", "25", "--step-time", "0.1"], "127.0.0.3")
    _agent_of(job_dir, "127.0.0.3").kill()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert "cannot restart: lost 127.0.0.3; no spare host left" in err, err[-3000:]
    status = json.loads((job_dir / "job.json").read_text())["status"]
    assert status["state"] == "failed" and status["restarts"] == 0
    assert status["excluded_hosts"][0]["host"] == "127.0.0.3"


def test_a_rank_failure_restarts_on_the_same_hosts(cluster):
    job_dir = cluster["job_dir"]
    done = subprocess.run(launch_args(cluster, "--hosts", "root@127.0.0.2", "--spare-hosts", "root@127.0.0.3",
                                      "--platform", "CPU", "--max-restarts", "1", "--entry", PAYLOAD, "--tee", "none",
                                      "--", "--steps", "2", "--fail-rank", "0", "--exit-code", "3",
                                      "--fail-attempts", "1"),
                          capture_output=True, text=True, timeout=180, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads((job_dir / "job.json").read_text())["status"]
    assert status["restarts"] == 1 and status["excluded_hosts"] == [] and status["spare_hosts"] == []
    assert [a["hosts"] for a in status["attempts"]] == [["127.0.0.2"], ["127.0.0.2"]]
    assert status["attempts"][0]["lost_hosts"] == {}


@pytest.mark.parametrize("args, message", [
    (["--hosts", "root@127.0.0.2", "--spare-hosts", "root@127.0.0.2"], "--spare-hosts: a spare is one of the job's hosts"),
    (["--hosts", "root@127.0.0.2", "--min-hosts", "2"], "--min-hosts 2: the job has only 1 host(s)"),
    (["--min-hosts", "0"], "--min-hosts"),
    (["--spare-hosts", "root@127.0.0.3", "--launcher", "local"], "--spare-hosts: spares take the place of a lost SSH host"),
])
def test_bad_spare_values_are_one_line(cluster, args, message):
    done = subprocess.run(launch_args(cluster, "--platform", "CPU", *args, "--entry", PAYLOAD), capture_output=True,
                          text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
    assert not cluster["job_dir"].exists()


def test_a_host_that_fails_pre_flight_is_replaced_by_a_spare_before_anything_starts(cluster):
    from tests.fixtures.sshd import UNREACHABLE_ADDRESS

    job_dir = cluster["job_dir"]
    done = subprocess.run(launch_args(cluster, "--hosts", f"root@{UNREACHABLE_ADDRESS}", "--spare-hosts",
                                      "root@127.0.0.3", "--platform", "CPU", "--ssh-timeout", "3", "--entry", PAYLOAD,
                                      "--tee", "none", "--", "--steps", "2"),
                          capture_output=True, text=True, timeout=180, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{UNREACHABLE_ADDRESS} failed pre-flight ssh: " in done.stderr and "127.0.0.3 takes its place" in done.stderr
    document = json.loads((job_dir / "job.json").read_text())
    assert [h["name"] for h in document["hosts"]] == ["127.0.0.3"]
    (excluded,) = document["status"]["excluded_hosts"]
    assert excluded["host"] == UNREACHABLE_ADDRESS and excluded["reason"].startswith("pre-flight ssh:")


def test_pre_flight_refuses_a_host_whose_job_dir_disk_is_nearly_full(cluster, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounts a tiny tmpfs (root)")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        done = subprocess.run([sys.executable, "-m", "launcher.cli", "--ssh-config", str(cluster["config"]),
                               "--job-dir", str(small / "job"), "--hosts", "root@127.0.0.2", "--platform", "CPU",
                               "--entry", PAYLOAD], capture_output=True, text=True, timeout=120, cwd=REPO,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 2, done.stderr
        assert "disk" in done.stderr and "GiB needed" in done.stderr and "Traceback" not in done.stderr
        assert not (small / "job").exists()
    finally:
        subprocess.run(["umount", str(small)], check=False)
