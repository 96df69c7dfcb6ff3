"""Real MindSpore under launch-train's dynamic start (CPU): 2-rank data-parallel training, and a restart that resumes."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures.jobs import TRAIN_STEPS, assert_nothing_left, descendant_pids

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def test_two_rank_cpu_training_trains_for_real_and_saves_a_checkpoint(two_rank_cpu_job: Path):
    job_dir = two_rank_cpu_job
    document = json.loads((job_dir / "job.json").read_text())
    assert document["mode"] == "dynamic" and document["platform"] == "CPU" and document["rank_size"] == 2
    assert document["status"]["state"] == "succeeded" and document["status"]["exit_code"] == 0
    assert document["entry"] == {"module": "deeplab.train"}
    for rank in range(2):
        log = (job_dir / f"LOG{rank}" / "log.txt").read_text()
        losses = [float(m) for m in re.findall(r"epoch: \d+ step: \d+, loss is ([0-9.]+)", log)]
        assert len(losses) == TRAIN_STEPS, log[-2000:]
        assert all(loss > 0 for loss in losses)
    checkpoints = sorted((job_dir / "LOG0" / "ckpt").glob("*.ckpt"))
    assert checkpoints and checkpoints[-1].stat().st_size > 0
    assert not list((job_dir / "LOG1").glob("ckpt/*.ckpt"))  # rank 0 alone writes checkpoints


def test_a_killed_rank_restarts_the_job_and_every_rank_resumes_from_one_checkpoint(tmp_path, synthetic_voc):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "launcher.cli", "--platform", "CPU", "--devices", "2", "--job-dir", str(job_dir),
         "--max-restarts", "1", "--tee", "none", "--", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
         "--train-steps", "6", "--set", "save_checkpoint_steps=2", "--set", "eval_every_epochs=0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 240
        while not list((job_dir / "LOG0" / "ckpt").glob("*.ckpt")):
            assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint before the kill"
            time.sleep(0.05)
        victim = _rank_process(job_dir, rank=1)
        victim.kill()
        _, err = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)
    assert launcher.returncode == 0, err[-3000:]
    assert "rank 1 on" in err and "killed by SIGKILL" in err and "restarting the whole job (1 of 1)" in err
    status = json.loads((job_dir / "job.json").read_text())["status"]
    assert status["state"] == "succeeded" and status["restarts"] == 1
    resumed = {}
    for rank in range(2):
        log = (job_dir / f"LOG{rank}" / "log.txt").read_text()
        second_attempt = log.split("==== launch-train: restart 1:")[1]
        match = re.search(r"resumed from (\S+) at step (\d+)", second_attempt)
        assert match, second_attempt[-2000:]
        checkpoint = job_dir / f"LOG{rank}" / match.group(1)  # an absolute path stays as it is
        resumed[rank] = (checkpoint.resolve(), int(match.group(2)))
        # tiny_synthetic's global batch 8 = 4 per rank: 2 steps per epoch on 8 images per rank.
        assert "epoch: 3 step: 2, loss is" in second_attempt
        if rank == 0:  # same --ckpt-dir on both attempts: the restart loads the compiled graph
            assert re.search(r"compile cache \S+: reusing \d+ graph", second_attempt), second_attempt[:3000]
    assert resumed[0] == resumed[1] and resumed[0][0].parent == job_dir / "LOG0" / "ckpt" and resumed[0][1] >= 2
    assert_nothing_left(job_dir, baseline)


# Every spelling deeplab's config accepts works: the launcher never reads the trainer's options.
# Cheap: the all-ranks semantics at two ranks once; the other spellings with one rank, whose
# rank-prefixed checkpoint names (deeplab-rank0-*) show the option was read as true. The one-rank
# jobs (one thread each) run at the same time, each killed and restarted on its own.
@pytest.mark.parametrize("spellings, ranks", [(("true",), 2), (("yes", "1"), 1)], ids=["true-2", "yes+1-1"])
def test_every_rank_resumes_from_its_own_checkpoint_when_all_ranks_save(tmp_path, synthetic_voc, spellings, ranks):
    jobs = {spelling: tmp_path / f"job-{spelling}" for spelling in spellings}
    baseline = descendant_pids()
    launchers = {}
    try:
        for spelling, job_dir in jobs.items():
            launchers[spelling] = subprocess.Popen(
                [sys.executable, "-m", "launcher.cli", "--platform", "CPU", "--devices", str(ranks), "--job-dir",
                 str(job_dir), "--max-restarts", "1", "--tee", "none", "--", "--config", "tiny_synthetic",
                 "--data-root", str(synthetic_voc), "--train-steps", "4", "--set", "save_checkpoint_steps=2",
                 "--set", f"save_ckpt_all_ranks={spelling}", "--set", "threads=1",
                 "--set", "eval_every_epochs=0"],  # step checkpoints only (no -best)
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        deadline = time.monotonic() + 240
        # Every rank's step-2 checkpoint (LAUNCH_TRAIN_CKPT_DIR: LOG0/ckpt for every rank), then a
        # kill: no rank can save step 4 before it lands.
        to_kill = set(spellings)
        while to_kill:
            for spelling in sorted(to_kill):
                ckpt_dir = jobs[spelling] / "LOG0" / "ckpt"
                if all(list(ckpt_dir.glob(f"deeplab-rank{r}-step000002.ckpt")) for r in range(ranks)):
                    _rank_process(jobs[spelling], rank=ranks - 1).kill()
                    to_kill.discard(spelling)
                else:
                    assert launchers[spelling].poll() is None and time.monotonic() < deadline, \
                        f"{spelling}: no checkpoints before the kill"
            time.sleep(0.02)
        errors = {spelling: launcher.communicate(timeout=max(1.0, deadline + 120 - time.monotonic()))[1]
                  for spelling, launcher in launchers.items()}
    finally:
        for launcher in launchers.values():
            if launcher.poll() is None:
                launcher.kill()
                launcher.wait(timeout=10)
    for spelling, job_dir in jobs.items():
        ckpt_dir = job_dir / "LOG0" / "ckpt"
        assert launchers[spelling].returncode == 0, (spelling, errors[spelling][-3000:])
        assert "restarting the whole job (1 of 1)" in errors[spelling]
        for rank in range(ranks):
            second_attempt = (job_dir / f"LOG{rank}" / "log.txt").read_text().split("==== launch-train: restart 1:")[1]
            assert f"resumed from {ckpt_dir / f'deeplab-rank{rank}-step000002.ckpt'} at step 2" in second_attempt
            assert "training done at step 4" in second_attempt
        assert sorted(p.name for p in ckpt_dir.glob("*.ckpt")) == [f"deeplab-rank{r}-step000004.ckpt" for r in range(ranks)]
        assert_nothing_left(job_dir, baseline)


def _rank_process(job_dir: Path, rank: int) -> psutil.Process:
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if env.get("LAUNCH_TRAIN_JOB_DIR") == str(job_dir) and env.get("RANK_ID") == str(rank) \
                    and "deeplab.train" in proc.cmdline():
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    raise AssertionError(f"rank {rank} of {job_dir} is not running")
