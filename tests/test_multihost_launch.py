"""launch-train over two real sshd "hosts" (127.0.0.2, 127.0.0.3) from one command.

Both hosts are this machine, so they share the job dir's file system: the job dir is the
same path on every host, each host writes only its own LOG<rank>/, only the controller
writes job.json. Every test checks that no rank, scheduler or agent is left behind.
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

from tests.fixtures.jobs import assert_each_rank_reached_device_setup
from tests.fixtures.sshd import UNREACHABLE_ADDRESS

HOSTS = "root@127.0.0.2,root@127.0.0.3"
PAYLOAD = '''\
import json, os, sys, time
keys = [k for k in os.environ if k.startswith(("RANK", "DEVICE", "MS_", "SERVER", "LAUNCH_TRAIN", "SSH_CONNECTION"))]
with open("record.json.tmp", "w") as out:
    json.dump({"env": {k: os.environ[k] for k in keys}, "cwd": os.getcwd(), "pid": os.getpid()}, out)
os.replace("record.json.tmp", "record.json")
print("payload rank", os.environ["RANK_ID"], flush=True)
print("epoch: 1 step: 1, loss is 0.5", flush=True)
if os.environ.get("FAIL_RANK") == os.environ["RANK_ID"]:
    time.sleep(0.5)
    print("rank failing on purpose", flush=True)
    sys.exit(3)
time.sleep(float(os.environ.get("PAYLOAD_SLEEP", "0")))
print("epoch: 1 step: 2, loss is 0.25", flush=True)
'''


@pytest.fixture
def cluster(sshd_hosts, tmp_path):
    """ssh config for the test hosts, a recording payload, per-host fake hccn.conf files."""
    config = sshd_hosts.write_ssh_config(tmp_path / "ssh_config")
    payload = tmp_path / "payload.py"
    payload.write_text(PAYLOAD)
    for index, host in enumerate(("127.0.0.2", "127.0.0.3")):
        (tmp_path / "hccn" / host).mkdir(parents=True)
        (tmp_path / "hccn" / host / "hccn.conf").write_text(
            "".join(f"address_{d}=192.168.{index}.{10 + d}\n" for d in range(8)))
    yield {"config": config, "payload": payload, "tmp": tmp_path, "job_dir": tmp_path / "job"}
    assert_nothing_left(tmp_path / "job")


def job_leftovers(job_dir: Path) -> list[str]:
    """Ranks / schedulers of the job (by their environment) and agents of the job (by argv)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            if "launcher.remote.agent" in cmdline and str(job_dir) in cmdline:
                found.append(f"agent pid {proc.pid}: {cmdline}")
            elif proc.pid != os.getpid() and proc.environ().get("LAUNCH_TRAIN_JOB_DIR") == str(job_dir):
                found.append(f"pid {proc.pid}: {cmdline}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def assert_nothing_left(job_dir: Path, wait_s: float = 10.0) -> None:
    deadline = time.monotonic() + wait_s
    while job_leftovers(job_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job_leftovers(job_dir) == []


def launch_args(cluster, *extra: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", "--ssh-config", str(cluster["config"]),
            "--job-dir", str(cluster["job_dir"]), *extra]


def rank_table_args(cluster, *extra: str) -> list[str]:
    return launch_args(cluster, "--hosts", HOSTS, "--platform", "Ascend", "--devices", "8",
                       "--hccn-conf", str(cluster["tmp"] / "hccn" / "{host}" / "hccn.conf"),
                       "--entry", str(cluster["payload"]), "--tee", "none", *extra)


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_rank_table_job_over_two_hosts(cluster, sshd_hosts):
    args = rank_table_args(cluster)
    args[args.index("--tee") + 1] = "9"
    logs_before = {host.address: len(host.log.read_text().splitlines()) for host in sshd_hosts.hosts}
    done = run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    # One SSH session per host: pre-flight's became the agent, and the files came down its channel
    # (no SFTP): each session runs the login shell, ~100 ms of CPU where ~/.bashrc inits pyenv or conda.
    for address, sessions in _sessions_started(sshd_hosts, logs_before).items():
        assert len(sessions) == 1 and "session: command" in sessions[0], (address, sessions)
    # --tee 9: every line of rank 9 comes back from its host; other ranks show progress only.
    assert "[127.0.0.3:9] payload rank 9" in done.stdout
    assert "payload rank 10" not in done.stdout
    job_dir = cluster["job_dir"]
    table = json.loads((job_dir / "rank_table.json").read_text())
    # One table merged from both hosts' hccn.conf, servers in server_id order.
    assert [s["server_id"] for s in table["server_list"]] == ["127.0.0.2", "127.0.0.3"]
    assert table["server_list"][1]["device"][3]["device_ip"] == "192.168.1.13"
    job = json.loads((job_dir / "job.json").read_text())
    assert job["status"]["state"] == "succeeded"
    assert [h["name"] for h in job["hosts"]] == ["127.0.0.2", "127.0.0.3"]
    assert [h["local"] for h in job["hosts"]] == [False, False]
    for rank in range(16):
        record = json.loads((job_dir / f"LOG{rank}" / "record.json").read_text())
        env = record["env"]
        assert env["RANK_ID"] == str(rank) and env["RANK_SIZE"] == "16"
        assert env["DEVICE_ID"] == str(rank % 8) and env["SERVER_ID"] == str(rank // 8)
        assert env["RANK_TABLE_FILE"] == str(job_dir / "rank_table.json")
        assert record["cwd"] == str(job_dir / f"LOG{rank}")
        # Started under the SSH session of its own host: sshd's SSH_CONNECTION names the server address.
        assert env["SSH_CONNECTION"].split()[2] == ("127.0.0.2" if rank < 8 else "127.0.0.3")


def test_failing_rank_on_second_host_stops_every_rank(cluster):
    started = time.monotonic()
    done = run(rank_table_args(cluster, "--env", "FAIL_RANK=12", "--env", "PAYLOAD_SLEEP=60"))
    elapsed = time.monotonic() - started
    assert done.returncode == 3, done.stderr[-3000:]
    assert "rank 12 on 127.0.0.3 failed (exit code 3)" in done.stderr
    assert "rank failing on purpose" in done.stderr  # the log tail comes back from the remote host
    assert elapsed < 60  # ranks sleeping 60 s were stopped, not waited for
    job = json.loads((cluster["job_dir"] / "job.json").read_text())
    assert job["status"]["state"] == "failed"
    assert job["status"]["first_failure"]["rank"] == 12 and job["status"]["first_failure"]["host"] == "127.0.0.3"


def _start_background(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_for_records(job_dir: Path, ranks, timeout: float = 60) -> dict[int, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paths = {r: job_dir / f"LOG{r}" / "record.json" for r in ranks}
        if all(p.exists() for p in paths.values()):
            return {r: json.loads(p.read_text()) for r, p in paths.items()}
        time.sleep(0.1)
    raise AssertionError(f"ranks {list(ranks)} did not start within {timeout}s")


def test_killed_rank_on_second_host_stops_everything(cluster):
    proc = _start_background(rank_table_args(cluster, "--env", "PAYLOAD_SLEEP=60"))
    try:
        records = _wait_for_records(cluster["job_dir"], range(16))
        os.kill(records[10]["pid"], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGKILL, err[-3000:]
    assert "rank 10 on 127.0.0.3 failed (killed by SIGKILL)" in err


def test_ctrl_c_on_the_controller_stops_every_host(cluster):
    proc = _start_background(rank_table_args(cluster, "--env", "PAYLOAD_SLEEP=60"))
    try:
        _wait_for_records(cluster["job_dir"], range(16))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err
    job = json.loads((cluster["job_dir"] / "job.json").read_text())
    assert job["status"]["state"] == "interrupted"


def _agent_session_process(job_dir: Path, host: str) -> psutil.Process:
    """The sshd process serving the agent of ``host`` (the agent's parent)."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "launcher.remote.agent" in " ".join(cmdline) and str(job_dir) in cmdline and host in cmdline:
            return proc.parent()
    raise AssertionError(f"no agent for {host}")


def test_lost_ssh_connection_stops_the_job(cluster):
    proc = _start_background(rank_table_args(cluster, "--env", "PAYLOAD_SLEEP=60"))
    try:
        _wait_for_records(cluster["job_dir"], range(16))
        # Cut host 2's SSH connection from the server side, as a network failure would.
        _agent_session_process(cluster["job_dir"], "127.0.0.3").kill()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert "127.0.0.3" in err and ("lost" in err or "connection" in err.lower()), err[-3000:]


def test_controller_killed_agents_stop_their_ranks(cluster):
    proc = _start_background(rank_table_args(cluster, "--env", "PAYLOAD_SLEEP=60"))
    try:
        _wait_for_records(cluster["job_dir"], range(16))
        proc.kill()  # SIGKILL: the controller cannot clean up; agents must notice by themselves
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert_nothing_left(cluster["job_dir"], wait_s=20)


def test_unreachable_host_fails_preflight_with_nothing_started(cluster):
    job_dir = cluster["tmp"] / "job2"
    args = launch_args(cluster, "--hosts", f"{HOSTS},root@{UNREACHABLE_ADDRESS}", "--platform", "CPU",
                       "--devices", "1", "--entry", str(cluster["payload"]))
    args[args.index("--job-dir") + 1] = str(job_dir)
    done = run(args)
    assert done.returncode == 2
    assert done.stderr.startswith("launch-train: error: pre-flight failed on 1 of 3 hosts; nothing was started")
    assert f"root@{UNREACHABLE_ADDRESS}" in done.stderr and "connection refused" in done.stderr
    assert "Traceback" not in done.stderr
    assert not job_dir.exists()


def test_unknown_host_key_is_rejected_unless_accepted(sshd_hosts, cluster):
    empty = cluster["tmp"] / "empty_known_hosts"
    empty.write_text("")
    args = launch_args(cluster, "--hosts", "root@127.0.0.2", "--platform", "CPU", "--devices", "1",
                       "--ssh-known-hosts", str(empty), "--entry", str(cluster["payload"]))
    done = run(args)
    assert done.returncode == 2
    assert "host key of root@127.0.0.2:" in done.stderr and "--ssh-accept-unknown-host-keys" in done.stderr
    assert not cluster["job_dir"].exists()
    assert empty.read_text() == ""

    accepted = run(rank_table_args(cluster, "--ssh-known-hosts", str(empty), "--ssh-accept-unknown-host-keys"))
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert empty.read_text() == ""  # accepted for this run, not written anywhere


def test_dry_run_shows_each_host(sshd_hosts, cluster):
    done = run(rank_table_args(cluster, "--dry-run"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "rank 15: host 127.0.0.3" in done.stdout
    per_host = done.stdout[done.stdout.index("per host:"):]
    assert "127.0.0.3: ranks 8, 9, 10, 11, 12, 13, 14, 15" in per_host
    assert f"ssh -p {sshd_hosts.hosts[1].port} root@127.0.0.3" in per_host and "launcher.remote.agent" in per_host
    assert not cluster["job_dir"].exists()


@pytest.mark.slow
def test_two_host_mindspore_cpu_training(cluster, synthetic_voc):
    # Through a tree start (--ssh-tree-width 1): the agent on 127.0.0.2, which also runs the scheduler,
    # starts 127.0.0.3's agent itself; the real trainer runs on both (the direct start runs the real
    # trainer in the rank-table test below).
    done = run(launch_args(cluster, "--hosts", HOSTS, "--devices", "1", "--platform", "CPU", "--tee", "none",
                           "--ssh-tree-width", "1", "--",
                           "--config", "tiny_synthetic", "--data-root", str(synthetic_voc), "--train-steps", "4",
                           "--set", "threads=1", "--set", "eval_every_epochs=0"), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    job_dir = cluster["job_dir"]
    assert (job_dir / "agents" / "relay-0.json").is_file() and not (job_dir / "relay").exists()
    job = json.loads((job_dir / "job.json").read_text())
    assert job["status"]["state"] == "succeeded" and job["mode"] == "dynamic"
    assert job["scheduler"]["host"] == "127.0.0.2" and job["scheduler"]["address"] == "127.0.0.2"
    for rank, host in ((0, "127.0.0.2"), (1, "127.0.0.3")):
        assert job["ranks"][rank]["host"] == host
        log = (job_dir / f"LOG{rank}" / "log.txt").read_text()
        assert "epoch: 2 step: 2, loss is" in log  # global batch 8 = 4 per rank: 2 steps per epoch
    assert list((job_dir / "LOG0" / "ckpt").glob("*.ckpt"))

    # The same ssh flags bring every host's results together (over SFTP from the "remote" hosts).
    results = cluster["tmp"] / "results"
    collected = run([sys.executable, "-m", "launcher.collect.cli", str(job_dir), "-o", str(results),
                     "--ssh-config", str(cluster["config"]), "--json"])
    assert collected.returncode == 0, collected.stderr[-2000:]
    summary = json.loads((results / job["job_id"] / "summary.json").read_text())
    assert [(r["rank"], r["host"], r["steps"]) for r in summary["ranks"]] == [(0, "127.0.0.2", 4), (1, "127.0.0.3", 4)]


@pytest.mark.slow
def test_rank_table_over_two_hosts_runs_the_real_trainer_until_mindspore_refuses_the_npu(cluster, synthetic_voc):
    # One NPU per host (two real trainers, not sixteen): HCCL wants all 8 per server, hence --no-topology-check.
    done = run(launch_args(cluster, "--hosts", HOSTS, "--platform", "Ascend", "--devices", "1", "--no-topology-check",
                           "--hccn-conf", str(cluster["tmp"] / "hccn" / "{host}" / "hccn.conf"), "--tee", "none", "--",
                           "--config", "tiny_synthetic", "--data-root", str(synthetic_voc)), timeout=240)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Unsupported device target Ascend" in done.stderr
    assert_each_rank_reached_device_setup(cluster["job_dir"], 2, "Ascend")
    job = json.loads((cluster["job_dir"] / "job.json").read_text())
    assert [r["host"] for r in job["ranks"]] == ["127.0.0.2", "127.0.0.3"]


def _sessions_started(sshd_hosts, before: dict) -> dict:
    """host address -> the "Starting session:" lines its sshd logged since ``before`` (line counts)."""
    return {host.address: [line for line in host.log.read_text().splitlines()[before[host.address]:]
                           if "Starting session:" in line] for host in sshd_hosts.hosts}


def test_mpirun_over_two_hosts_from_a_hostfile(cluster, sshd_hosts):
    hostfile = cluster["tmp"] / "hostfile"
    hostfile.write_text("# two test hosts, two ranks each\nroot@127.0.0.2 slots=2\nroot@127.0.0.3 slots=2  # second\n")
    before = {host.address: len(host.log.read_text().splitlines()) for host in sshd_hosts.hosts}
    done = run(launch_args(cluster, "--hostfile", str(hostfile), "--platform", "CPU", "--mode", "mpirun",
                           "--entry", str(cluster["payload"]), "--tee", "none"))
    assert done.returncode == 0, done.stderr[-3000:]
    # Ours: the first host's pre-flight session became the agent that runs mpirun; the second's took
    # its files (no SFTP). mpirun's own ssh started Open MPI's daemon on each (127.0.0.2 is not one of
    # this machine's interface addresses, so Open MPI does not take it for the host it runs on).
    sessions = _sessions_started(sshd_hosts, before)
    assert [len(sessions["127.0.0.2"]), len(sessions["127.0.0.3"])] == [2, 2], sessions
    job_dir = cluster["job_dir"]
    assert (job_dir / "hostfile").read_text().splitlines()[-2:] == ["127.0.0.2 slots=2", "127.0.0.3 slots=2"]
    for rank in range(4):
        env = json.loads((job_dir / f"LOG{rank}" / "record.json").read_text())["env"]
        assert env["RANK_ID"] == str(rank) and env["RANK_SIZE"] == "4"
        # mpirun (started by the agent on the first host) reached the second host with ssh itself.
        assert env["SSH_CONNECTION"].split()[2] == ("127.0.0.2" if rank < 2 else "127.0.0.3")


def test_an_mpirun_restart_sends_the_files_again_in_a_session_of_its_own(cluster, sshd_hosts):
    """The second attempt has no pre-flight session left: the other host's files go down a session
    running launcher.remote.file_stream, and that attempt's ranks read them as the first's did."""
    before = {host.address: len(host.log.read_text().splitlines()) for host in sshd_hosts.hosts}
    done = run(launch_args(cluster, "--hosts", HOSTS, "--platform", "CPU", "--mode", "mpirun", "--devices", "1",
                           "--max-restarts", "1", "--env", "FAIL_RANK=1", "--entry", str(cluster["payload"]),
                           "--tee", "none"))
    assert done.returncode == 3, done.stderr[-3000:]
    job = json.loads((cluster["job_dir"] / "job.json").read_text())
    assert [attempt["state"] for attempt in job["status"]["attempts"]] == ["failed", "failed"]
    assert "rank failing on purpose" in (cluster["job_dir"] / "LOG1" / "log.txt").read_text()
    # 127.0.0.3, per attempt: our session (pre-flight's kept, then one of its own) and mpirun's ssh.
    assert len(_sessions_started(sshd_hosts, before)["127.0.0.3"]) == 4


@pytest.mark.slow
def test_mpirun_over_two_hosts_runs_the_real_trainer_until_mindspore_refuses_the_gpu(cluster, synthetic_voc):
    # mpirun, started by the agent on the first host, reaches the second over ssh itself; both
    # ranks run the default trainer, told GPU by env.sh, as far as MindSpore's GPU set-up.
    hostfile = cluster["tmp"] / "hostfile"
    hostfile.write_text("root@127.0.0.2 slots=1\nroot@127.0.0.3 slots=1\n")
    # Each host's pre-flight counts its GPUs with nvidia-smi: a fake one, on the PATH of an
    # interpreter wrapper given as --remote-python (nothing else on the machine sees it).
    fake_bin = cluster["tmp"] / "gpu-bin"
    fake_bin.mkdir()
    (fake_bin / "nvidia-smi").write_text("#!/bin/sh\necho 0\necho 1\n")  # --query-gpu=index --format=csv,noheader
    python = cluster["tmp"] / "python-with-gpus"
    python.write_text(f"#!/bin/sh\nPATH={fake_bin}:$PATH exec {sys.executable} \"$@\"\n")
    for tool in (fake_bin / "nvidia-smi", python):
        tool.chmod(0o755)
    done = run(launch_args(cluster, "--hostfile", str(hostfile), "--platform", "GPU", "--mode", "mpirun",
                           "--devices", "1", "--remote-python", str(python), "--tee", "none", "--", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc)),
               timeout=240)
    assert done.returncode != 0, done.stderr[-3000:]
    assert "Unsupported device target GPU" in done.stderr
    assert_each_rank_reached_device_setup(cluster["job_dir"], 2, "GPU")
    job = json.loads((cluster["job_dir"] / "job.json").read_text())
    assert job["mode"] == "mpirun" and [r["host"] for r in job["ranks"]] == ["127.0.0.2", "127.0.0.3"]


def test_this_machine_plus_a_remote_host(cluster):
    # The local host gets its own hccn.conf through {host}; its scheduler-facing address is
    # its primary address (never 127.0.0.1, which would be each host itself).
    (cluster["tmp"] / "hccn" / "localhost").mkdir()
    (cluster["tmp"] / "hccn" / "localhost" / "hccn.conf").write_text(
        "".join(f"address_{d}=192.168.5.{10 + d}\n" for d in range(8)))
    args = rank_table_args(cluster)
    args[args.index("--hosts") + 1] = "localhost,root@127.0.0.3"
    done = run(args)
    assert done.returncode == 0, done.stderr[-3000:]
    job = json.loads((cluster["job_dir"] / "job.json").read_text())
    assert [(h["name"], h["local"]) for h in job["hosts"]] == [("localhost", True), ("127.0.0.3", False)]
    assert job["hosts"][0]["address"] != "127.0.0.1"
    table = json.loads((cluster["job_dir"] / "rank_table.json").read_text())
    server_ids = [s["server_id"] for s in table["server_list"]]
    assert "127.0.0.3" in server_ids and job["hosts"][0]["address"] in server_ids
    for rank in range(16):
        record = json.loads((cluster["job_dir"] / f"LOG{rank}" / "record.json").read_text())
        if job["ranks"][rank]["host"] == "127.0.0.3":  # started by the agent in 127.0.0.3's SSH session
            assert record["env"]["SSH_CONNECTION"].split()[2] == "127.0.0.3"
