"""Preemption: SIGTERM/SIGUSR1 ask every rank to save and stop within --grace; --resume continues the job.

Real launch-train processes: a payload that answers SIGUSR1 like deeplab.train (finish the step,
"save", print "saved and stopped at step N", exit 0), and the real trainer (slow).
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.conftest import assert_no_job_process, one_line_error

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, "-m", "launcher.cli"]
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")


def _start(job_dir: Path, *payload_args: str, grace: str = "20") -> subprocess.Popen:
    return subprocess.Popen([*LAUNCH, "--platform", "CPU", "--devices", "2", "--job-dir", str(job_dir), "--entry",
                             PAYLOAD, "--tee", "none", "--grace", grace, "--", "--save-on-usr1", *payload_args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            stdin=subprocess.DEVNULL)


def _wait_for_steps(job_dir: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [job_dir / f"LOG{rank}" / "log.txt" for rank in range(2)]
        if all(log.exists() and "step: 2," in log.read_text() for log in logs):
            return
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    raise AssertionError("the ranks made no steps")


def _status(job_dir: Path) -> dict:
    return json.loads((job_dir / "job.json").read_text())["status"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_preemption_signal_asks_every_rank_to_save_and_records_the_step(tmp_path, sig):
    job_dir = tmp_path / "job"
    proc = _start(job_dir, "--steps", "2000", "--step-time", "0.05")
    _wait_for_steps(job_dir, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    status = _status(job_dir)
    assert status["state"] == "interrupted"
    preempted = status["preempted"]
    assert preempted["signal"] == sig.name and preempted["ranks_saved"] == 2 and preempted["all_stopped_in_time"]
    saved = [int(re.search(r"saved and stopped at step (\d+)", (job_dir / f"LOG{r}" / "log.txt").read_text()).group(1))
             for r in range(2)]
    assert preempted["saved_step"] == max(saved) >= 2
    # The ranks stopped by themselves (exit 0), not by the launcher's SIGTERM.
    assert all(rank["exit_code"] == 0 and not rank["stopped_by_launcher"] for rank in status["ranks"])
    assert_no_job_process(job_dir)


def test_a_second_signal_stops_a_slow_save_at_once(tmp_path):
    job_dir = tmp_path / "job"
    proc = _start(job_dir, "--steps", "2000", "--step-time", "0.05", "--save-time", "120", grace="120")
    _wait_for_steps(job_dir, proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    asked = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - asked < 15, err
    assert proc.returncode == 143
    preempted = _status(job_dir)["preempted"]
    assert preempted["ranks_saved"] == 0 and not preempted["all_stopped_in_time"]
    assert_no_job_process(job_dir)


def test_when_the_grace_runs_out_the_ranks_are_stopped(tmp_path):
    job_dir = tmp_path / "job"
    proc = _start(job_dir, "--steps", "2000", "--step-time", "0.05", "--save-time", "120", grace="1.5")
    _wait_for_steps(job_dir, proc)
    asked = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert 1.5 <= time.monotonic() - asked < 20, err
    assert proc.returncode == 143
    assert not _status(job_dir)["preempted"]["all_stopped_in_time"]
    assert_no_job_process(job_dir)


def test_grace_zero_stops_at_once_as_before(tmp_path):
    job_dir = tmp_path / "job"
    proc = _start(job_dir, "--steps", "2000", "--step-time", "0.05", grace="0")
    _wait_for_steps(job_dir, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    status = _status(job_dir)
    assert status["preempted"] is None
    assert all(rank["stopped_by_launcher"] for rank in status["ranks"])
    assert "LAUNCH_TRAIN_SAVE_SIGNAL" not in json.loads((job_dir / "job.json").read_text())["ranks"][0]["env"]


def test_resume_continues_a_preempted_job_as_its_next_attempt(tmp_path):
    job_dir = tmp_path / "job"
    proc = _start(job_dir, "--steps", "20", "--step-time", "0.1")
    _wait_for_steps(job_dir, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    done = subprocess.run([*LAUNCH, "--resume", str(job_dir), "--tee", "none"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    document = json.loads((job_dir / "job.json").read_text())
    status = document["status"]
    assert status["state"] == "succeeded"
    (earlier,) = status["earlier_launches"]
    assert earlier["state"] == "interrupted" and earlier["preempted"]["saved_step"] >= 2
    assert all(rank["env"]["LAUNCH_TRAIN_RESTART_COUNT"] == "1" for rank in document["ranks"])
    for rank in range(2):
        log = (job_dir / f"LOG{rank}" / "log.txt").read_text()
        first, second = log.split("==== launch-train: resume (attempt 1):")
        assert "saved and stopped at step" in first and f"rank {rank} done" in second
        record = json.loads((job_dir / f"LOG{rank}" / "record.json").read_text())
        assert record["env"]["LAUNCH_TRAIN_RESTART_COUNT"] == "1"
    # A job that succeeded has nothing left to resume.
    code, _, line = one_line_error(["launch-train", "--resume", str(job_dir)], cwd=tmp_path)
    assert code == 2 and "already succeeded" in line


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    not_a_job = tmp_path / "empty"
    not_a_job.mkdir()
    for args, message in [
        (["--resume", str(not_a_job)], "no job.json here"),
        (["--resume", str(tmp_path / "missing")], "not a directory"),
        (["--resume", str(not_a_job), "--devices", "3"], "give no other options"),
        (["--grace", "nan", "--dry-run"], "--grace nan: must be a number of seconds"),
        (["--grace", "-1", "--dry-run"], "--grace -1.0: must be a number of seconds"),
    ]:
        code, _, line = one_line_error(["launch-train", *args], cwd=tmp_path)
        assert code == 2 and message in line, (args, line)
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


@pytest.mark.slow
def test_the_real_trainer_saves_the_step_it_was_at_and_resume_continues_from_it(tmp_path, synthetic_voc):
    job_dir = tmp_path / "job"
    proc = subprocess.Popen([*LAUNCH, "--platform", "CPU", "--devices", "2", "--job-dir", str(job_dir), "--tee", "none",
                             "--", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
                             "--train-steps", "16", "--set", "save_checkpoint_steps=1000", "--set", "eval_every_epochs=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    log0 = job_dir / "LOG0" / "log.txt"
    # Asked at step 5: 11 steps (seconds) left to finish the step in hand and save, then a short resume.
    while not (log0.exists() and "epoch: 3 step: 1," in log0.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    saved = re.search(r"saved and stopped at step (\d+) as asked \(SIGUSR1\): (\S+)", log0.read_text())
    assert saved, log0.read_text()[-3000:]
    step, checkpoint = int(saved.group(1)), Path(saved.group(2))
    assert checkpoint.is_file() and checkpoint.name == f"deeplab-step{step:06d}.ckpt"
    assert _status(job_dir)["preempted"]["saved_step"] == step
    done = subprocess.run([*LAUNCH, "--resume", str(job_dir), "--tee", "none"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = log0.read_text().split("==== launch-train: resume (attempt 1):")[1]
    assert f"resumed from {checkpoint} at step {step}" in resumed and "training done at step 16" in resumed
