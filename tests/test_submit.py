"""launch-train --submit slurm (real sbatch on the two-node test cluster) and --submit k8s (manifests)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures.jobs import assert_nothing_left, descendant_pids

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")
LAUNCH_TRAIN = str(Path(sys.executable).parent / "launch-train")
COLLECT = str(Path(sys.executable).parent / "collect-results")


@pytest.fixture
def slurm_job(slurm_no_jobs_left, tmp_path):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    yield slurm_no_jobs_left, job_dir
    assert_nothing_left(job_dir, baseline)


def test_submit_slurm_wait_runs_to_completion_and_collect_results_gathers_it(slurm_job, tmp_path):
    cluster, job_dir = slurm_job
    done = cluster.run(LAUNCH_TRAIN, "--submit", "slurm", "--nodes", "2", "--devices", "2", "--partition", "debug",
                       "--time", "10:00", "--wait", "--platform", "CPU", "--entry", PAYLOAD, "--job-dir", str(job_dir),
                       "--tee", "all", "--", "--steps", "3", timeout=180, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    slurm_id = done.stdout.split("submitted Slurm job ")[1].split(";")[0]
    assert f"job dir {job_dir}" in done.stdout
    assert (job_dir / "submit.sbatch").is_file()
    out = (job_dir / f"slurm-{slurm_id}.out").read_text()
    assert "succeeded: 4 ranks" in out and "[n2:3] epoch: 1 step: 3" in out
    assert cluster.job_state(slurm_id) == "COMPLETED"
    job = json.loads((job_dir / "job.json").read_text())
    assert job["status"]["state"] == "succeeded" and [h["name"] for h in job["hosts"]] == ["n1", "n2"]
    assert job["job_id"] in (job_dir / "submit.sbatch").read_text()  # the same job id inside the allocation
    results = tmp_path / "results"
    collected = subprocess.run([COLLECT, str(job_dir), "-o", str(results)], capture_output=True, text=True, timeout=120)
    assert collected.returncode == 0, collected.stderr
    summary = json.loads(next(results.rglob("summary.json")).read_text())
    assert json.dumps(summary).count("n2") >= 2  # both ranks of node 2 are in it


def test_submit_slurm_wait_exits_with_the_jobs_failure(slurm_job):
    cluster, job_dir = slurm_job
    done = cluster.run(LAUNCH_TRAIN, "--submit", "slurm", "--nodes", "2", "--wait", "--platform", "CPU",
                       "--entry", PAYLOAD, "--job-dir", str(job_dir), "--", "--fail-rank", "1", "--exit-code", "7",
                       timeout=180, check=False)
    assert done.returncode == 7, done.stderr
    slurm_id = done.stdout.split("submitted Slurm job ")[1].split(";")[0]
    assert "rank 1" in (job_dir / f"slurm-{slurm_id}.out").read_text()


def test_scancel_of_a_submitted_job_leaves_nothing(slurm_job):
    cluster, job_dir = slurm_job
    done = cluster.run(LAUNCH_TRAIN, "--submit", "slurm", "--nodes", "2", "--devices", "2", "--platform", "CPU",
                       "--entry", PAYLOAD, "--job-dir", str(job_dir), "--", "--sleep", "300", timeout=60)
    slurm_id = done.stdout.split("submitted Slurm job ")[1].split(";")[0]
    deadline = time.monotonic() + 60
    while not all((job_dir / f"LOG{r}" / "record.json").exists() for r in range(4)):
        assert time.monotonic() < deadline, "ranks did not start"
        time.sleep(0.1)
    cluster.run("scancel", slurm_id)
    assert cluster.wait_no_jobs(timeout=30) == []
    deadline = time.monotonic() + 15
    while cluster.task_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not cluster.task_processes()
    assert cluster.job_state(slurm_id) == "CANCELLED"


def test_submit_slurm_dry_run_prints_the_script_and_writes_nothing(tmp_path):
    job_dir = tmp_path / "job"
    done = subprocess.run([LAUNCH_TRAIN, "--submit", "slurm", "--nodes", "2", "--slurm-arg=--exclusive",
                           "--dry-run", "--platform", "CPU", "--job-dir", str(job_dir), "--", "--config", "it's"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --nodes=2" in done.stdout and "#SBATCH --exclusive" in done.stdout
    exec_line = next(line for line in done.stdout.splitlines() if line.startswith("exec "))
    import shlex
    words = shlex.split(exec_line)
    assert words[-2:] == ["--config", "it's"] and "--launcher=slurm" in words and "--submit" not in words
    assert "--dry-run" not in words and "--nodes" not in words
    assert not job_dir.exists()


def test_submit_slurm_bad_time_is_one_line(tmp_path):
    done = subprocess.run([LAUNCH_TRAIN, "--submit", "slurm", "--time", "ten minutes", "--platform", "CPU",
                           "--job-dir", str(tmp_path / "job")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("launch-train: error: --time 'ten minutes': use Slurm's formats, "
                                   "e.g. 30, 2:00:00 or 1-12:00:00")
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("kind, extra", [("volcano", ["--platform", "CPU"]), ("msjob", ["--platform", "CPU"]),
                                         ("ascendjob", ["--devices", "8"])])
def test_submit_k8s_writes_valid_manifests_whose_pods_run_from_env(tmp_path, k8s_validate, kind, extra):
    job_dir = tmp_path / "job"
    done = subprocess.run([LAUNCH_TRAIN, "--submit", "k8s", "--k8s-kind", kind, "--image", "reg/deeplab:1",
                           "--nodes", "2", "--namespace", "vision", *extra, "--job-dir", str(job_dir),
                           "--k8s-set", "container.resources.limits.memory=32Gi",
                           "--", "--config", "tiny_synthetic"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = sorted((job_dir / "k8s").glob("*.yaml"))
    assert [f.name.split("-")[1] for f in files][-1] == kind
    assert ("rings-config" in files[0].name) == (kind == "ascendjob")
    assert f"kubectl apply -f {job_dir / 'k8s'}" in done.stdout
    for path in files:
        obj = yaml.safe_load(path.read_text())
        assert k8s_validate(obj) == [], path
    job = yaml.safe_load(files[-1].read_text())
    from launcher.cluster.k8s_manifests import pod_templates

    for template in pod_templates(job, kind):
        command = template["spec"]["containers"][0]["command"]
        assert command[:4] == ["launch-train", "--from-env", "--k8s-kind", kind]
        assert command[-3:] == ["--", "--config", "tiny_synthetic"]
        assert "--image" not in command and "--submit" not in command and "--k8s-set" not in command
        assert template["spec"]["containers"][0]["resources"]["limits"]["memory"] == "32Gi"


def test_submit_k8s_apply_without_a_cluster_says_so(tmp_path):
    env = dict(os.environ, KUBECONFIG=str(tmp_path / "no-such-kubeconfig"))
    done = subprocess.run([LAUNCH_TRAIN, "--submit", "k8s", "--k8s-kind", "volcano", "--image", "reg/deeplab:1",
                           "--platform", "CPU", "--job-dir", str(tmp_path / "job"), "--apply"],
                          capture_output=True, text=True, timeout=60, env=env)
    if "kubectl not found" in done.stderr:
        pytest.skip("kubectl is not installed")
    assert done.returncode == 0, done.stderr
    assert "not applied: kubectl has no cluster configured" in done.stderr and "kubectl apply -f" in done.stderr
    assert list((tmp_path / "job" / "k8s").glob("*.yaml"))  # written, ready for a machine that has one


@pytest.mark.parametrize("args, message", [
    (["--k8s-kind", "volcano"], "give --image"),
    (["--image", "x"], "give --k8s-kind"),
    (["--k8s-kind", "volcano", "--image", "x", "--k8s-set", "spec..x=1"], "--k8s-set 'spec..x=1'"),
    (["--k8s-kind", "volcano", "--image", "x", "--mode", "mpirun"], "MPI operator"),
])
def test_submit_k8s_bad_input_is_one_line(tmp_path, args, message):
    done = subprocess.run([LAUNCH_TRAIN, "--submit", "k8s", "--platform", "CPU", *args,
                           "--job-dir", str(tmp_path / "job")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "job").exists()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_a_preempted_batch_job_saves_its_step_and_a_requeue_resumes_after_it(slurm_job):
    """SIGTERM to the batch job's launch-train (what a preemption sends): every rank saves and stops;
    the requeued script finds job.json and continues with launch-train --resume after the saved step."""
    cluster, job_dir = slurm_job
    done = cluster.run(LAUNCH_TRAIN, "--submit", "slurm", "--nodes", "2", "--platform", "CPU", "--entry", PAYLOAD,
                       "--job-dir", str(job_dir), "--grace", "30", "--tee", "all", "--",
                       "--save-on-usr1", "--steps", "30", "--step-time", "0.1", timeout=60)
    slurm_id = done.stdout.split("submitted Slurm job ")[1].split(";")[0]
    logs = [job_dir / f"LOG{rank}" / "log.txt" for rank in range(2)]
    _wait_for(lambda: all(log.exists() and "step: 5," in log.read_text() for log in logs), 120, "no steps")
    cluster.run("scancel", "--batch", "--signal=TERM", slurm_id)
    _wait_for(lambda: cluster.job_state(slurm_id) in ("FAILED", "COMPLETED"), 60, "the job did not end")
    status = json.loads((job_dir / "job.json").read_text())["status"]
    preempted = status["preempted"]
    assert status["state"] == "interrupted" and preempted["ranks_saved"] == 2 and preempted["all_stopped_in_time"]
    saved = preempted["saved_step"]
    assert 5 <= saved < 30
    cluster.run("scontrol", "requeue", slurm_id)
    _wait_for(lambda: cluster.job_state(slurm_id) == "PENDING", 60, "the job was not requeued")
    time.sleep(1.0)  # let the requeue set its begin time first; then move it to now (no 2-minute wait)
    cluster.run("scontrol", "update", f"JobId={slurm_id}", "StartTime=now")
    _wait_for(lambda: "resume (attempt 1)" in logs[0].read_text() and cluster.job_state(slurm_id) == "COMPLETED",
              120, f"the requeued job did not complete: {cluster.job_state(slurm_id)}")
    document = json.loads((job_dir / "job.json").read_text())
    assert document["status"]["state"] == "succeeded"
    assert document["status"]["earlier_launches"][0]["preempted"]["saved_step"] == saved
    for log in logs:
        first, resumed = log.read_text().split("==== launch-train: resume (attempt 1):")
        own = int(re.search(r"saved and stopped at step (\d+)", first).group(1))  # each rank's own "checkpoint"
        assert re.search(r"resumed after step (\d+)", resumed).group(1) == str(own)
        assert f"epoch: 1 step: {own + 1}," in resumed and "epoch: 1 step: 30," in resumed
