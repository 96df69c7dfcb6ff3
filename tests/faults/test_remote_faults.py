"""Remote hosts (real sshd on 127.0.0.2/3) that hang or stop answering, and Ctrl-C with a frozen host.

A host "stops answering" for real: its sshd session processes are SIGSTOPped, so the TCP
connection stays up (the kernel still acknowledges) but nothing is read or written any
more -- the case where a controller used to block for good in paramiko's sendall.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.faults.test_hang import PAYLOAD as STUCK_PAYLOAD
from tests.test_multihost_launch import assert_nothing_left as assert_no_job_process

REPO = Path(__file__).resolve().parents[2]
SLEEPER = """\
import os, time
print("epoch: 1 step: 1, loss is 0.5", flush=True)
time.sleep(600)
"""


@pytest.fixture
def remote(sshd_hosts, tmp_path):
    config = sshd_hosts.write_ssh_config(tmp_path / "ssh_config")
    for index, host in enumerate(("127.0.0.2", "127.0.0.3")):
        (tmp_path / "hccn" / host).mkdir(parents=True)
        (tmp_path / "hccn" / host / "hccn.conf").write_text(
            "".join(f"address_{d}=192.168.{index}.{10 + d}\n" for d in range(8)))
    (tmp_path / "stuck.py").write_text(STUCK_PAYLOAD)
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    stopped: list[psutil.Process] = []
    yield {"config": config, "tmp": tmp_path, "job_dir": tmp_path / "job", "stopped": stopped, "sshd": sshd_hosts}
    for proc in stopped:  # the frozen sshd sessions: end them, the fixture's sshd stays
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert_no_job_process(tmp_path / "job", wait_s=30)


def args(remote, hosts: str, payload: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", "--ssh-config", str(remote["config"]),
            "--job-dir", str(remote["job_dir"]), "--hosts", hosts, "--platform", "Ascend", "--devices", "2",
            "--hccn-conf", str(remote["tmp"] / "hccn" / "{host}" / "hccn.conf"),
            "--entry", str(remote["tmp"] / payload), "--tee", "none", "--no-topology-check", *extra]


def freeze_sessions(remote, index: int) -> list[psutil.Process]:
    """SIGSTOP the sshd processes serving the connections to test host `index` (not its listener)."""
    listener = psutil.Process(remote["sshd"].processes[index].pid)
    sessions = [p for p in listener.children(recursive=True) if p.name().startswith("sshd")]
    assert sessions
    for proc in sessions:
        proc.send_signal(signal.SIGSTOP)
    remote["stopped"].extend(sessions)
    return sessions


def wait_running(job_dir: Path, ranks: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while sum((job_dir / f"LOG{r}" / "log.txt").exists() and "step: 1" in (job_dir / f"LOG{r}" / "log.txt").read_text()
              for r in range(ranks)) < ranks:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "the ranks did not start"
        time.sleep(0.1)


def test_a_hung_rank_on_a_remote_host_has_its_stack_dumped_there(remote):
    done = subprocess.run(args(remote, "root@127.0.0.2", "stuck.py", "--first-step-timeout", "5"),
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 124, done.stderr
    assert re.search(r"hung \(no first step within 5 s\): rank 0 on 127\.0\.0\.2 \(no step yet, quiet for \d+ s; "
                     r"sleeping, waiting in .*wait_for_collective", done.stderr)
    hang = json.loads((remote["job_dir"] / "job.json").read_text())["status"]["hang"]
    assert hang["stuck_ranks"] == [0, 1]
    for rank in (0, 1):
        assert hang["ranks"][rank]["stack"] == f"LOG{rank}/stack.txt" and hang["ranks"][rank]["pids"]
        assert "wait_for_collective" in (remote["job_dir"] / f"LOG{rank}" / "stack.txt").read_text()


def test_a_host_that_stops_answering_is_given_up_with_its_name(remote):
    proc = subprocess.Popen(args(remote, "root@127.0.0.2,root@127.0.0.3", "sleeper.py", "--heartbeat-timeout", "4"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_running(remote["job_dir"], 4, proc)
        freeze_sessions(remote, 1)
        frozen_at = time.monotonic()
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - frozen_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    assert "host 127.0.0.3 stopped answering: nothing from its agent for" in err and "given up" in err
    assert took < 4 + 15, took  # the heartbeat timeout, then a prompt stop (no wait on the frozen host)
    status = json.loads((remote["job_dir"] / "job.json").read_text())["status"]
    assert status["state"] == "failed" and status["ended"]


def test_ctrl_c_ends_the_controller_within_seconds_with_a_frozen_host(remote):
    proc = subprocess.Popen(args(remote, "root@127.0.0.2,root@127.0.0.3", "sleeper.py", "--heartbeat-timeout", "60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_running(remote["job_dir"], 4, proc)
        freeze_sessions(remote, 1)
        time.sleep(1.0)
        interrupted_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - interrupted_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert took < 12, took
    assert "Traceback" not in err
    status = json.loads((remote["job_dir"] / "job.json").read_text())["status"]
    assert status["state"] == "interrupted"
