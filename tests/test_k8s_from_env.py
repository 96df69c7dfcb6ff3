"""launch-train --from-env: a pod's launcher started with each operator's variables, for real.

No Kubernetes API server can run here, so the pod is this machine and the operator is the
test: it sets exactly the variables the operator would (and, for Ascend, writes the rank
table into the "mounted" file while the launcher waits). The launcher then really starts
and supervises this pod's ranks (the recording payload) and writes job.json and LOG<rank>/.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hccl import rank_table
from tests.fixtures.jobs import assert_nothing_left, descendant_pids

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")
LAUNCH_TRAIN = str(Path(sys.executable).parent / "launch-train")


def from_env(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "VC_", "VK_", "RANK_", "SLURM"))}
    full.update(env)
    return subprocess.run([LAUNCH_TRAIN, "--from-env", *args], env=full, capture_output=True, text=True,
                          timeout=timeout)


def record(job_dir: Path, rank: int) -> dict:
    return json.loads((job_dir / f"LOG{rank}" / "record.json").read_text())["env"]


@pytest.fixture
def pod_job(tmp_path):
    baseline = descendant_pids()
    yield tmp_path / "job"
    assert_nothing_left(tmp_path / "job", baseline)


def test_volcano_second_pod_starts_ranks_2_and_3_of_4(pod_job):
    env = {"VC_TASK_INDEX": "1", "VK_TASK_INDEX": "1", "VC_WORKER_HOSTS": "127.0.0.1,127.0.0.2", "VC_WORKER_NUM": "2"}
    done = from_env(env, "--k8s-kind", "volcano", "--platform", "CPU", "--devices", "2", "--sched-port", "2222",
                    "--entry", PAYLOAD, "--job-dir", str(pod_job), "--", "--steps", "1")
    assert done.returncode == 0, done.stderr
    pod = pod_job / "pod-1"
    for rank in (2, 3):
        env = record(pod, rank)
        assert (env["RANK_ID"], env["RANK_SIZE"], env["MS_NODE_ID"], env["MS_WORKER_NUM"]) == (str(rank), "4", str(rank), "4")
        assert (env["MS_SCHED_HOST"], env["MS_SCHED_PORT"], env["MS_ROLE"]) == ("127.0.0.1", "2222", "MS_WORKER")
    assert not (pod / "LOG0" / "log.txt").exists()  # rendered with the whole plan, run by pod 0
    job = json.loads((pod / "job.json").read_text())
    assert job["status"]["state"] == "succeeded"
    ran_here = {e["rank"]: e["exit_code"] for e in job["status"]["ranks"] if e["started"]}
    assert ran_here == {2: 0, 3: 0}  # ranks 0, 1 are pod 0's: planned here, not run


def test_volcano_first_pod_also_runs_the_scheduler(pod_job):
    env = {"VC_TASK_INDEX": "0", "VK_TASK_INDEX": "0", "VC_WORKER_HOSTS": "127.0.0.1,127.0.0.2", "VC_WORKER_NUM": "2"}
    done = from_env(env, "--k8s-kind", "volcano", "--platform", "CPU", "--devices", "2", "--sched-port", "2222",
                    "--entry", PAYLOAD, "--job-dir", str(pod_job), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "volcano pod 0 of 2: runs ranks 0, 1 and the MindSpore scheduler" in done.stdout
    assert not pod_job.exists()


def test_msjob_worker_pod_uses_the_operators_scheduler_address(pod_job):
    env = {"MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": "2222", "MS_WORKER_NUM": "2",
           "MS_NODE_ID": "0"}
    done = from_env(env, "--k8s-kind", "msjob", "--platform", "CPU", "--entry", PAYLOAD,
                    "--job-dir", str(pod_job), "--", "--steps", "1")
    assert done.returncode == 0, done.stderr
    env0 = record(pod_job / "pod-0", 0)
    assert (env0["RANK_ID"], env0["RANK_SIZE"], env0["MS_SCHED_HOST"], env0["MS_SCHED_PORT"]) == ("0", "2", "127.0.0.1", "2222")
    assert not (pod_job / "pod-0" / "scheduler" / "log.txt").exists()  # the Scheduler pod runs it, not this one


def test_msjob_scheduler_pod_runs_only_the_scheduler(pod_job):
    env = {"MS_ROLE": "MS_SCHED", "MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": "2222", "MS_WORKER_NUM": "2"}
    done = from_env(env, "--k8s-kind", "msjob", "--platform", "CPU", "--entry", PAYLOAD,
                    "--job-dir", str(pod_job), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "msjob pod 0 of 2: runs only the MindSpore scheduler" in done.stdout


def _table(node_ips):
    tables = [rank_table.build(ip, {d: f"192.168.{i}.{10 + d}" for d in range(8)}) for i, ip in enumerate(node_ips)]
    return rank_table.merge(tables)


def test_ascendjob_pod_waits_for_the_rank_table_then_starts_its_server_ranks(pod_job, tmp_path):
    mounted = tmp_path / "config" / "hccl.json"
    mounted.parent.mkdir()
    mounted.write_text('{\n    "status":"initializing"\n}\n')
    env = {"MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "10.0.0.5", "MS_SCHED_PORT": "2222", "MS_NODE_RANK": "0",
           "MS_WORKER_NUM": "16", "MS_LOCAL_WORKER": "8", "ASCEND_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
           "XDL_IP": "10.1.0.12", "RANK_TABLE_FILE": str(mounted)}
    table = _table(["10.1.0.11", "10.1.0.12"])

    def operator():
        time.sleep(1.5)
        temp = mounted.with_name("hccl.json.tmp")
        temp.write_text(rank_table.dumps(table))
        os.replace(temp, mounted)

    writer = threading.Thread(target=operator)
    writer.start()
    try:
        done = from_env(env, "--k8s-kind", "ascendjob", "--platform", "Ascend", "--entry", PAYLOAD,
                        "--job-dir", str(pod_job), "--rank-table-timeout", "60", "--tee", "none")
    finally:
        writer.join()
    assert done.returncode == 0, done.stderr
    assert 'rank table: "status": "initializing"' in done.stderr
    # XDL_IP 10.1.0.12 is the second server: ranks 8..15 although MS_NODE_RANK says 0
    pod = pod_job / "pod-1"
    for rank in range(8, 16):
        env = record(pod, rank)
        server, device = table.rank(int(env["RANK_ID"]))
        assert server.server_id == "10.1.0.12" and int(env["DEVICE_ID"]) == device.device_id
        assert env["RANK_SIZE"] == "16" and env["RANK_TABLE_FILE"] == str(pod / "rank_table.json")
    assert rank_table.load(pod / "rank_table.json") == table


def test_a_rank_table_that_never_completes_is_a_clear_error(pod_job, tmp_path):
    mounted = tmp_path / "hccl.json"
    mounted.write_text('{"status":"initializing"}')
    env = {"MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "10.0.0.5", "MS_SCHED_PORT": "2222", "MS_NODE_RANK": "0",
           "MS_WORKER_NUM": "8", "MS_LOCAL_WORKER": "8", "RANK_TABLE_FILE": str(mounted)}
    done = from_env(env, "--k8s-kind", "ascendjob", "--platform", "Ascend", "--entry", PAYLOAD,
                    "--job-dir", str(pod_job), "--rank-table-timeout", "1")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"launch-train: error: RANK_TABLE_FILE {mounted}: still waiting after 1 s")
    assert "Traceback" not in done.stderr and not pod_job.exists()


def test_missing_operator_variables_are_named(pod_job):
    done = from_env({"VC_TASK_INDEX": "0"}, "--k8s-kind", "volcano", "--platform", "CPU", "--entry", PAYLOAD,
                    "--job-dir", str(pod_job))
    assert done.returncode == 2
    assert "VC_WORKER_HOSTS: not set" in done.stderr and not pod_job.exists()


@pytest.mark.slow
def test_two_volcano_pods_train_mindspore_for_real(pod_job, synthetic_voc):
    """Two pods' launchers (this machine twice) with what Volcano sets: a real 2-rank data-parallel run."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "VC_", "VK_", "RANK_", "SLURM"))}
    procs = []
    for index in (0, 1):
        env = dict(base, VC_TASK_INDEX=str(index), VK_TASK_INDEX=str(index),
                   VC_WORKER_HOSTS="127.0.0.1,127.0.0.1", VC_WORKER_NUM="2")
        procs.append(subprocess.Popen(
            [LAUNCH_TRAIN, "--from-env", "--k8s-kind", "volcano", "--platform", "CPU", "--sched-port", str(port),
             "--job-dir", str(pod_job), "--status-interval", "60", "--", "--config", "tiny_synthetic",
             "--data-root", str(synthetic_voc), "--train-steps", "2", "--set", "eval_every_epochs=0"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [proc.communicate(timeout=400) for proc in procs]
    for proc, (_out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    for index in (0, 1):
        log = (pod_job / f"pod-{index}" / f"LOG{index}" / "log.txt").read_text()
        assert "loss is" in log and "training done at step 2" in log
    assert "scheduler" in (pod_job / "pod-0" / "scheduler" / "log.txt").read_text()
