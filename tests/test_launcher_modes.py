"""rank-table (Ascend) and mpirun (GPU) start modes, run for real with a payload that records its environment.

Ascend devices come from a fake hccn.conf; GPUs from a fake ``nvidia-smi`` on PATH (the
launcher asks ``nvidia-smi -L`` which GPUs exist). mpirun is the real Open MPI.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hccl import rank_table
from tests.fixtures.jobs import assert_each_rank_reached_device_setup, assert_nothing_left, descendant_pids

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")
LAUNCH = [sys.executable, "-m", "launcher.cli"]


def run(job_dir: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, "--job-dir", str(job_dir), "--entry", PAYLOAD, *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)


def records(job_dir: Path, n: int) -> list[dict]:
    return [json.loads((job_dir / f"LOG{r}" / "record.json").read_text()) for r in range(n)]


@pytest.fixture()
def fake_gpus(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "nvidia-smi"
    tool.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 1\n"
                    + "".join(f"echo 'GPU {i}: Fake GPU (UUID: GPU-{i})'\n" for i in range(4)))
    tool.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_rank_table_mode_gives_each_device_its_rank_from_the_table(tmp_path):
    conf = tmp_path / "hccn.conf"
    conf.write_text("".join(f"address_{d}=10.9.0.{d + 10}\nnetmask_{d}=255.255.255.0\n" for d in range(8)))
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = run(job_dir, "--platform", "Ascend", "--hccn-conf", str(conf), "--visible-devices", "4,5,6,7")
    assert done.returncode == 0, done.stderr
    table = rank_table.load(job_dir / "rank_table.json")
    rank_of = {int(d.device_id): int(d.rank_id) for s in table.servers for d in s.devices}
    ip_of = {int(d.device_id): d.device_ip for s in table.servers for d in s.devices}
    assert ip_of == {4: "10.9.0.14", 5: "10.9.0.15", 6: "10.9.0.16", 7: "10.9.0.17"}
    for rec in records(job_dir, 4):
        env = rec["env"]
        assert env["RANK_TABLE_FILE"] == str(job_dir / "rank_table.json")
        assert rank_of[int(env["DEVICE_ID"])] == int(env["RANK_ID"]) == rec["rank"]
        assert env["RANK_SIZE"] == "4" and env["SERVER_ID"] == "0"
        assert rec["cwd"] == str(job_dir / f"LOG{rec['rank']}")
        assert "MS_ROLE" not in env
    assert not (job_dir / "scheduler").exists()
    assert_nothing_left(job_dir, baseline)


def test_a_given_rank_table_is_used_as_is(tmp_path):
    table = rank_table.build("127.0.0.1", {0: "10.8.0.1", 1: "10.8.0.2"}, devices=[1, 0])
    given = tmp_path / "table.json"
    rank_table.write(table, given)
    job_dir = tmp_path / "job"
    done = run(job_dir, "--platform", "Ascend", "--rank-table", str(given))
    assert done.returncode == 0, done.stderr
    assert (job_dir / "rank_table.json").read_bytes() == given.read_bytes()
    by_rank = {rec["rank"]: rec["env"]["DEVICE_ID"] for rec in records(job_dir, 2)}
    assert by_rank == {0: "1", 1: "0"}


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI (mpirun) is not installed")
def test_mpirun_mode_runs_one_process_per_gpu_with_open_mpi_ids(tmp_path, fake_gpus):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = run(job_dir, "--platform", "GPU", "--visible-devices", "1,3", "--tee", "all", "--", "--steps", "2",
               env=fake_gpus)
    assert done.returncode == 0, done.stderr
    assert (job_dir / "hostfile").read_text().splitlines()[-1] == "127.0.0.1 slots=2"
    for rec in records(job_dir, 2):
        env = rec["env"]
        assert env["OMPI_COMM_WORLD_RANK"] == env["RANK_ID"] == str(rec["rank"])
        assert env["OMPI_COMM_WORLD_SIZE"] == "2" and env["OMPI_COMM_WORLD_LOCAL_RANK"] == str(rec["rank"])
        assert env["CUDA_VISIBLE_DEVICES"] == "1,3" and env["DEVICE_ID"] == str(rec["rank"])
        assert rec["cwd"] == str(job_dir / f"LOG{rec['rank']}")
        assert (job_dir / f"LOG{rec['rank']}" / "exit_status").read_text().strip() == "0"
        assert "epoch: 1 step: 2, loss is 0.50000" in (job_dir / f"LOG{rec['rank']}" / "log.txt").read_text()
    status = json.loads((job_dir / "job.json").read_text())["status"]
    assert status["state"] == "succeeded" and [r["exit_code"] for r in status["ranks"]] == [0, 0]
    assert_nothing_left(job_dir, baseline)


@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI (mpirun) is not installed")
def test_mpirun_mode_names_the_failing_rank_and_stops_the_rest(tmp_path, fake_gpus):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = run(job_dir, "--platform", "GPU", "--devices", "3", "--", "--fail-rank", "1", "--exit-code", "5",
               "--sleep", "0.5", env=fake_gpus)
    assert done.returncode == 5, done.stderr
    assert "rank 1 on" in done.stderr and "exit code 5" in done.stderr
    status = json.loads((job_dir / "job.json").read_text())["status"]
    assert status["first_failure"]["rank"] == 1 and status["first_failure"]["exit_code"] == 5
    assert_nothing_left(job_dir, baseline)


# The REAL default trainer in the Ascend and GPU start modes. This machine has neither, so
# each rank can get as far as MindSpore's own device set-up: the platform reached the
# trainer (DEVICE_TARGET in env.sh, no --device-target flag) when MindSpore refuses the
# missing NPU/GPU, not when deeplab-train refuses a rank-table/mpirun start on the CPU.
@pytest.mark.slow
def test_rank_table_start_runs_the_real_trainer_until_mindspore_refuses_the_missing_npu(tmp_path, synthetic_voc):
    conf = tmp_path / "hccn.conf"
    conf.write_text("".join(f"address_{d}=10.9.0.{d + 10}\n" for d in range(8)))
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = subprocess.run([*LAUNCH, "--job-dir", str(job_dir), "--platform", "Ascend", "--hccn-conf", str(conf),
                           "--devices", "2", "--visible-devices", "0,1", "--tee", "none", "--",
                           "--config", "tiny_synthetic", "--data-root", str(synthetic_voc)],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert done.returncode == 1, done.stderr[-3000:]  # MindSpore's RuntimeError: Python's exit status 1
    assert "Unsupported device target Ascend" in done.stderr  # the failing rank's log tail
    assert_each_rank_reached_device_setup(job_dir, 2, "Ascend")
    assert_nothing_left(job_dir, baseline)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="Open MPI (mpirun) is not installed")
def test_mpirun_start_runs_the_real_trainer_until_mindspore_refuses_the_missing_gpu(tmp_path, fake_gpus, synthetic_voc):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = subprocess.run([*LAUNCH, "--job-dir", str(job_dir), "--platform", "GPU", "--mode", "mpirun",
                           "--devices", "2", "--tee", "none", "--",
                           "--config", "tiny_synthetic", "--data-root", str(synthetic_voc)],
                          capture_output=True, text=True, timeout=240, cwd=REPO, env=fake_gpus)
    assert done.returncode != 0, done.stderr[-3000:]
    assert "Unsupported device target GPU" in done.stderr
    assert_each_rank_reached_device_setup(job_dir, 2, "GPU")
    assert_nothing_left(job_dir, baseline)
