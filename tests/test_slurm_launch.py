"""launch-train --launcher slurm inside a real allocation of the two-node Slurm test cluster.

Every test runs the real CLI under ``salloc -N2`` (the launcher then runs on the submit
host, as it does on a login node) and checks the ranks ran as one srun step on the nodes
the plan put them on, and that no job, step or process is left afterwards.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hccl import rank_table
from tests.fixtures.jobs import assert_nothing_left, descendant_pids

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")
LAUNCH_TRAIN = str(Path(sys.executable).parent / "launch-train")


def salloc(cluster, per_node: int, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return cluster.run("salloc", "-N2", f"--ntasks-per-node={per_node}", LAUNCH_TRAIN, *args,
                       timeout=timeout, check=False)


def records(job_dir: Path, ranks: int) -> list[dict]:
    return [json.loads((job_dir / f"LOG{r}" / "record.json").read_text()) for r in range(ranks)]


@pytest.fixture
def slurm_job(slurm_no_jobs_left, tmp_path):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()  # the cluster's own daemons are children of this test process
    yield slurm_no_jobs_left, job_dir
    assert_nothing_left(job_dir, baseline)


def test_ranks_run_as_one_step_on_the_planned_nodes(slurm_job):
    cluster, job_dir = slurm_job
    done = salloc(cluster, 2, "--platform", "CPU", "--entry", PAYLOAD, "--job-dir", str(job_dir),
                  "--", "--steps", "2")
    assert done.returncode == 0, done.stderr
    recs = records(job_dir, 4)
    assert [r["env"]["SLURMD_NODENAME"] for r in recs] == ["n1", "n1", "n2", "n2"]
    assert [r["env"]["SLURM_PROCID"] for r in recs] == ["0", "1", "2", "3"]
    assert len({(r["env"]["SLURM_JOB_ID"], r["env"]["SLURM_STEP_ID"]) for r in recs}) == 1  # ONE step
    first = cluster.nodes[0].address
    assert {r["env"]["MS_SCHED_HOST"] for r in recs} == {first}  # the scheduler's node, reachable by all
    assert [r["env"]["MS_NODE_ID"] for r in recs] == ["0", "1", "2", "3"]
    assert [r["env"]["DEVICE_ID"] for r in recs] == ["0", "1", "0", "1"]
    job = json.loads((job_dir / "job.json").read_text())
    assert job["status"]["state"] == "succeeded"
    assert [h["name"] for h in job["hosts"]] == ["n1", "n2"]
    assert "[n2:2]" not in done.stdout and "[n1:0]" in done.stdout  # --tee 0 by default


def test_rank_table_job_of_16_ranks_with_each_nodes_hccn_conf(slurm_job, tmp_path):
    cluster, job_dir = slurm_job
    for index, node in enumerate(cluster.node_names):
        (tmp_path / node).mkdir()
        (tmp_path / node / "hccn.conf").write_text("".join(f"address_{d}=192.168.{index}.{10 + d}\n" for d in range(8)))
    done = salloc(cluster, 8, "--platform", "Ascend", "--mode", "rank-table", "--devices", "8",
                  "--hccn-conf", str(tmp_path / "{host}" / "hccn.conf"), "--entry", PAYLOAD,
                  "--job-dir", str(job_dir), "--tee", "none")
    assert done.returncode == 0, done.stderr
    table = rank_table.load(job_dir / "rank_table.json")
    assert [s.server_id for s in table.servers] == [n.address for n in cluster.nodes]
    assert table.rank_size == 16
    recs = records(job_dir, 16)
    for rank, rec in enumerate(recs):
        env = rec["env"]
        node = cluster.nodes[rank // 8]
        assert env["SLURMD_NODENAME"] == node.name
        server, device = table.rank(int(env["RANK_ID"]))
        assert server.server_id == node.address and device.device_id == int(env["DEVICE_ID"]) == rank % 8
        assert device.device_ip == f"192.168.{rank // 8}.{10 + rank % 8}"  # this node's own hccn.conf
        assert env["RANK_TABLE_FILE"] == str(job_dir / "rank_table.json") and env["RANK_SIZE"] == "16"


def test_a_rank_killed_on_node_two_stops_the_whole_step_and_is_named(slurm_job):
    cluster, job_dir = slurm_job
    done = salloc(cluster, 2, "--platform", "CPU", "--entry", PAYLOAD, "--job-dir", str(job_dir),
                  "--", "--kill-rank", "3", "--signal", "SIGKILL", "--sleep", "0.5", timeout=120)
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    assert "rank 3" in done.stderr and "n2" in done.stderr and "SIGKILL" in done.stderr
    job = json.loads((job_dir / "job.json").read_text())
    assert job["status"]["state"] == "failed"
    assert job["status"]["first_failure"]["rank"] == 3
    others = [e for e in job["status"]["ranks"] if e["rank"] != 3]
    assert others and all(e["exit_code"] != 0 or e.get("signal") for e in others)  # stopped, not finished
    assert not cluster.task_processes()


def test_ctrl_c_cancels_the_step_and_leaves_nothing(slurm_job):
    cluster, job_dir = slurm_job
    proc = subprocess.Popen(["salloc", "-N2", "--ntasks-per-node=2", LAUNCH_TRAIN, "--platform", "CPU",
                             "--entry", PAYLOAD, "--job-dir", str(job_dir), "--", "--sleep", "300"],
                            env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not all((job_dir / f"LOG{r}" / "record.json").exists() for r in range(4)):
            assert time.monotonic() < deadline and proc.poll() is None, "ranks did not start"
            time.sleep(0.1)
        launcher = next(p for p in psutil.Process(proc.pid).children() if "launch-train" in " ".join(p.cmdline()))
        launcher.send_signal(signal.SIGINT)  # what a Ctrl-C on the terminal delivers to it
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not cluster.task_processes()


def test_dry_run_prints_the_srun_steps_and_writes_nothing(slurm_job):
    cluster, job_dir = slurm_job
    done = salloc(cluster, 2, "--platform", "CPU", "--entry", PAYLOAD, "--job-dir", str(job_dir), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "ranks step:     srun --nodes=2 --ntasks-per-node=2 --ntasks=4 --nodelist=n1,n2" in done.stdout
    assert "--kill-on-bad-exit=1" in done.stdout and "scheduler step: srun --nodes=1" in done.stdout
    assert not job_dir.exists()


def test_hosts_are_refused_inside_an_allocation(slurm_job):
    cluster, job_dir = slurm_job
    done = salloc(cluster, 1, "--launcher", "slurm", "--hosts", "a,b", "--platform", "CPU",
                  "--entry", PAYLOAD, "--job-dir", str(job_dir))
    assert done.returncode == 2
    assert "--hosts: under --launcher slurm" in done.stderr and "Traceback" not in done.stderr
    assert not job_dir.exists()


def test_launcher_slurm_outside_an_allocation_says_so(tmp_path):
    done = subprocess.run([LAUNCH_TRAIN, "--launcher", "slurm", "--platform", "CPU", "--entry", PAYLOAD,
                           "--job-dir", str(tmp_path / "job")], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("launch-train: error: --launcher slurm: not inside")


@pytest.mark.slow
def test_real_mindspore_training_over_two_slurm_nodes(slurm_job, synthetic_voc):
    """The same launch-train that trains locally, inside a real allocation: 2 nodes x 1 CPU rank."""
    cluster, job_dir = slurm_job
    done = salloc(cluster, 1, "--platform", "CPU", "--job-dir", str(job_dir), "--status-interval", "60",
                  "--", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc), "--train-steps", "6",
                  "--set", "eval_every_epochs=0", timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    job = json.loads((job_dir / "job.json").read_text())
    assert job["status"]["state"] == "succeeded"
    assert [(e["rank"], e["host"], e["exit_code"]) for e in job["status"]["ranks"]] == [(0, "n1", 0), (1, "n2", 0)]
    for rank in (0, 1):
        log = (job_dir / f"LOG{rank}" / "log.txt").read_text()
        assert "loss is" in log and "training done at step 6" in log
    assert list((job_dir / "LOG0" / "ckpt").glob("*.ckpt"))


def test_max_restarts_reruns_the_step(slurm_job):
    cluster, job_dir = slurm_job
    # The payload fails on rank 2 on the first attempt only (LAUNCH_TRAIN_RESTART_COUNT is 0 then).
    payload = job_dir.parent / "flaky.py"
    payload.write_text("import os, sys\nprint('epoch: 1 step: 1, loss is 0.5', flush=True)\n"
                       "sys.exit(5 if os.environ.get('RANK_ID') == '2' and not os.path.exists('../LOG2/failed') "
                       "and open('../LOG2/failed', 'w') else 0)\n")
    done = salloc(cluster, 2, "--platform", "CPU", "--entry", str(payload), "--job-dir", str(job_dir),
                  "--max-restarts", "1")
    assert done.returncode == 0, done.stderr
    assert "restarting the whole job (1 of 1)" in done.stderr
    job = json.loads((job_dir / "job.json").read_text())
    assert job["status"]["state"] == "succeeded" and job["status"]["restarts"] == 1
    assert "==== launch-train: restart 1" in (job_dir / "LOG3" / "log.txt").read_text()


def test_mpirun_mode_uses_open_mpis_own_slurm_support(slurm_job):
    if subprocess.run(["which", "mpirun"], capture_output=True).returncode != 0:
        pytest.skip("mpirun not installed (make system-deps)")
    cluster, job_dir = slurm_job
    done = salloc(cluster, 2, "--platform", "CPU", "--mode", "mpirun", "--entry", PAYLOAD, "--job-dir", str(job_dir),
                  "--", "--steps", "1")
    assert done.returncode == 0, done.stderr
    assert "n1 slots=2" in (job_dir / "hostfile").read_text()  # node names: Open MPI matches the allocation
    recs = records(job_dir, 4)
    assert [r["env"]["OMPI_COMM_WORLD_RANK"] for r in recs] == ["0", "1", "2", "3"]
    assert [r["env"]["SLURMD_NODENAME"] for r in recs] == ["n1", "n1", "n2", "n2"]  # orted started through srun


def test_gpu_jobs_take_their_devices_from_the_allocation_not_this_hosts_nvidia_smi(slurm_job):
    cluster, job_dir = slurm_job
    done = salloc(cluster, 2, "--platform", "GPU", "--mode", "dynamic", "--entry", PAYLOAD,
                  "--job-dir", str(job_dir), "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    ranks = plan["ranks"]
    assert [(r["host"], r["env"]["CUDA_VISIBLE_DEVICES"]) for r in ranks] == [("n1", "0,1"), ("n1", "0,1"),
                                                                             ("n2", "0,1"), ("n2", "0,1")]


def test_threads_follow_the_cpus_slurm_allocated_and_slurm_does_the_binding(slurm_job):
    cluster, job_dir = slurm_job
    done = cluster.run("salloc", "-N2", "--ntasks-per-node=2", "--cpus-per-task=3", LAUNCH_TRAIN, "--platform", "CPU",
                       "--entry", PAYLOAD, "--job-dir", str(job_dir), "--dry-run", "--json", check=False)
    assert done.returncode == 0, done.stderr
    ranks = json.loads(done.stdout)["ranks"]
    assert {r["env"]["OMP_NUM_THREADS"] for r in ranks} == {"3"}  # 6 CPUs a node / 2 ranks
    assert all(r["cpus"] is None for r in ranks)  # no taskset inside a Slurm task


def test_a_job_dir_node_two_cannot_see_is_refused_before_anything_starts(slurm_job):
    cluster, _ = slurm_job
    job_dir = cluster.n1_only / "job"
    done = salloc(cluster, 1, "--platform", "CPU", "--entry", PAYLOAD, "--job-dir", str(job_dir))
    assert done.returncode == 2, done.stderr
    last = [line for line in done.stderr.splitlines() if line.startswith("launch-train")][-1]
    assert last == (f"launch-train: error: --job-dir {job_dir}: not visible on node n2; under Slurm the job dir "
                    "must be on a file system every node sees (e.g. your home or a shared scratch)")
    assert not job_dir.exists() and not list(cluster.n1_only.iterdir())  # marker removed, nothing written


def test_a_failed_node_is_replaced_by_a_spare_node_of_the_allocation(slurm_job):
    """salloc --no-kill keeps the allocation when a node fails; n2 is the spare. n1 is set DOWN mid-run
    (what slurmctld does to a node that died): srun says "Node failure on n1", the launcher excludes it
    and the next attempt runs on n2."""
    cluster, job_dir = slurm_job
    proc = subprocess.Popen(["salloc", "-N2", "--no-kill", "--ntasks-per-node=1", LAUNCH_TRAIN, "--platform", "CPU",
                             "--entry", PAYLOAD, "--job-dir", str(job_dir), "--spare-hosts", "n2", "--max-restarts",
                             "1", "--tee", "none", "--", "--steps", "40", "--step-time", "0.1"],
                            env=cluster.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        log = job_dir / "LOG0" / "log.txt"
        deadline = time.monotonic() + 120
        while not (log.exists() and "step: 3," in log.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        cluster.run("scontrol", "update", "NodeName=n1", "State=DOWN", "Reason=launch-train-test")
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        cluster.run("scontrol", "update", "NodeName=n1", "State=RESUME", check=False)
    assert proc.returncode == 0, err[-3000:]
    job = json.loads((job_dir / "job.json").read_text())
    assert [h["name"] for h in job["hosts"]] == ["n2"] and job["status"]["restarts"] == 1
    (excluded,) = job["status"]["excluded_hosts"]
    assert excluded["host"] == "n1" and "n1" in excluded["reason"]
    assert job["status"]["spare_hosts"][0]["host"] == "n2"
    assert records(job_dir, 1)[0]["env"]["SLURMD_NODENAME"] == "n2"


def test_spare_nodes_must_be_nodes_of_the_allocation(slurm_job):
    cluster, job_dir = slurm_job
    done = salloc(cluster, 1, "--platform", "CPU", "--entry", PAYLOAD, "--job-dir", str(job_dir), "--spare-hosts", "n9")
    assert done.returncode == 2 and "--spare-hosts n9: not a node of Slurm job" in done.stderr, done.stderr
    assert not job_dir.exists()
