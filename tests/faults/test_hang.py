"""The hang watchdog, for real: ranks that stop making progress are found, dumped, named and stopped.

The first cases use a payload without MindSpore on fake Ascend devices (rank-table
start: real processes, no scheduler), so they take seconds. The last one is the
issue's "done when": a real 2-rank MindSpore training (tiny_synthetic, dynamic
cluster) where one rank is frozen with SIGSTOP mid-training.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from launcher.run.hang import rank_processes
from tests.faults.conftest import BIN, assert_no_job_process

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, "-m", "launcher.cli"]

PAYLOAD = textwrap.dedent("""
    import os, sys, time

    def wait_for_collective():
        while True:
            time.sleep(1)

    rank = int(os.environ["RANK_ID"])
    steps = int(sys.argv[1 + rank]) if len(sys.argv) > 1 + rank else 0
    print("compiling the graph", flush=True)
    for step in range(1, steps + 1):
        print(f"epoch: 1 step: {step}, loss is {1.0 / step:.5f}", flush=True)
        time.sleep(0.1)
    wait_for_collective()
""")


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "stuck_payload.py"
    path.write_text(PAYLOAD)
    return path


@pytest.fixture
def hccn_conf(tmp_path: Path) -> Path:
    path = tmp_path / "hccn.conf"
    path.write_text("".join(f"address_{d}=192.168.30.{d + 1}\n" for d in range(8)))
    return path


def ascend(hccn_conf: Path, devices: int = 2) -> list[str]:
    return ["--platform", "Ascend", "--hccn-conf", str(hccn_conf), "--devices", str(devices)]


def status_of(job_dir: Path) -> dict:
    return json.loads((job_dir / "job.json").read_text())["status"]


def test_a_rank_that_never_makes_a_first_step_is_found_and_every_stack_dumped(tmp_path, payload, hccn_conf):
    job_dir = tmp_path / "job"
    done = subprocess.run([*LAUNCH, "--job-dir", str(job_dir), *ascend(hccn_conf), "--entry", str(payload),
                           "--first-step-timeout", "4", "--hang-timeout", "60", "--tee", "none"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 124, done.stderr
    assert re.search(r"hung \(no first step within 4 s\): rank 0 on \S+ \(no step yet, quiet for 4 s; sleeping, "
                     r"waiting in .*wait_for_collective \(stuck_payload.py:\d+\)\); rank 1 on ", done.stderr)
    assert "waiting in" in done.stderr and "wait_for_collective (stuck_payload.py:" in done.stderr
    status = status_of(job_dir)
    assert status["state"] == "failed" and status["exit_code"] == 124
    hang = status["hang"]
    assert hang["kind"] == "no first step" and hang["stuck_ranks"] == [0, 1] and hang["action"] == "stopped"
    for rank in (0, 1):
        stack = (job_dir / f"LOG{rank}" / "stack.txt").read_text()
        assert "wait_for_collective (stuck_payload.py:" in stack and "== process " in stack
        assert hang["ranks"][rank]["stack"] == f"LOG{rank}/stack.txt"
    assert_no_job_process(job_dir)


def test_the_rank_furthest_behind_is_named_and_the_job_restarts_under_max_restarts(tmp_path, payload, hccn_conf):
    job_dir = tmp_path / "job"
    started = time.time()
    # Rank 0 makes 6 steps, rank 1 only 2: then both wait for ever (rank 1 is the one behind).
    done = subprocess.run([*LAUNCH, "--job-dir", str(job_dir), *ascend(hccn_conf), "--entry", str(payload),
                           "--hang-timeout", "3", "--first-step-timeout", "60", "--max-restarts", "1", "--tee", "none",
                           "--", "6", "2"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 124, done.stderr
    assert len(re.findall(r"hung \(no new step within 3 s\): rank 1 on \S+ \(epoch 1 step 2", done.stderr)) == 2
    assert "restarting the whole job (1 of 1)" in done.stderr
    status = status_of(job_dir)
    assert status["restarts"] == 1 and status["hang"]["stuck_ranks"] == [1]
    assert status["hang"]["action"] == "stopped" and status["hang"]["earlier"][0]["action"] == "restarted"
    ranks = {r["rank"]: r for r in status["hang"]["ranks"]}
    assert (ranks[0]["steps"], ranks[1]["steps"]) == (6, 2) and ranks[1]["seconds_since_progress"] > 3
    assert time.time() - started < 60
    assert_no_job_process(job_dir)

    # collect-results shows the hang and every stack.
    results = tmp_path / "results"
    collected = subprocess.run([str(BIN / "collect-results"), str(job_dir), "-o", str(results), "--no-hash-cache"],
                               capture_output=True, text=True, timeout=120)
    assert collected.returncode == 1 and "hung_rank" in collected.stderr
    final = next(results.iterdir())
    summary = json.loads((final / "summary.json").read_text())
    assert summary["hang"]["stuck_ranks"] == [1] and summary["ranks"][1]["stack"] == "LOG1/stack.txt"
    html = (final / "report.html").read_text()
    assert "Hang: no new step for 3 s" in html and "Stacks of rank 1" in html and "wait_for_collective" in html


def test_status_and_stack_of_a_running_job_then_sighup_stops_it_cleanly(tmp_path, payload, hccn_conf):
    job_dir = tmp_path / "job"
    proc = subprocess.Popen([*LAUNCH, "--job-dir", str(job_dir), *ascend(hccn_conf), "--entry", str(payload),
                             "--hang-timeout", "600", "--tee", "none", "--", "3", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while len(rank_processes(str(job_dir))) < 2 or "step: 3" not in _read(job_dir / "LOG0" / "log.txt"):
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.1)
        shown = subprocess.run([*LAUNCH, "--status", str(job_dir)], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].startswith(f"job {json.loads((job_dir / 'job.json').read_text())['job_id']}: running")
        assert re.match(r"  rank   0 \[\S+\] running \(pid \d+, sleeping, 1 process\); epoch 1 step 3, loss 0.33333", lines[1])
        assert re.match(r"  rank   1 \[\S+\] running \(pid \d+, sleeping, 1 process\); epoch 1 step 1, loss 1.00000", lines[2])
        dumped = subprocess.run([*LAUNCH, "--stack", str(job_dir)], capture_output=True, text=True, timeout=60, cwd=REPO)
        assert dumped.returncode == 0, dumped.stderr
        assert re.search(rf"rank 0 \[\S+\]: {re.escape(str(job_dir / 'LOG0' / 'stack.txt'))} \(sleeping waiting in ",
                         dumped.stdout)
        assert "wait_for_collective" in (job_dir / "LOG1" / "stack.txt").read_text()
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGHUP, err
    status = status_of(job_dir)
    assert status["state"] == "interrupted" and status["exit_code"] == 129 and status["ended"]
    assert all(r["signal"] == "SIGTERM" for r in status["ranks"])
    assert_no_job_process(job_dir)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.slow
def test_a_frozen_rank_of_a_real_mindspore_job_is_found_named_and_the_job_stopped(tmp_path, synthetic_voc,
                                                                                   record_property):
    job_dir = tmp_path / "job"
    # Before the freeze a step takes well under a second (the first one, compiling, has
    # --first-step-timeout): 10 s of quiet is a hang, not a slow step.
    timeout_s = 10
    proc = subprocess.Popen(
        [*LAUNCH, "--platform", "CPU", "--devices", "2", "--job-dir", str(job_dir), "--tee", "none",
         "--hang-timeout", str(timeout_s), "--first-step-timeout", "600",
         "--", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc), "--train-steps", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    frozen_at = None
    try:
        deadline = time.monotonic() + 300
        while _read(job_dir / "LOG1" / "log.txt").count("loss is") < 3:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "rank 1 made no 3 steps in 300 s"
            time.sleep(0.2)
        frozen = rank_processes(str(job_dir))[1][0]
        assert "python" in frozen.exe()
        frozen.send_signal(signal.SIGSTOP)
        frozen_at = time.time()
        out, err = proc.communicate(timeout=timeout_s + 180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 124, err[-3000:]
    assert f"hung (no new step within {timeout_s} s): rank 1 on " in err
    assert "stopped (by a signal)" in err
    status = status_of(job_dir)
    hang = status["hang"]
    assert hang["stuck_ranks"] == [1] and status["state"] == "failed"
    detected = datetime.fromisoformat(hang["detected"].replace("Z", "+00:00")).timestamp()
    detect_s = detected - frozen_at
    record_property("detect_s", round(detect_s, 2))
    record_property("timeout_s", timeout_s)
    assert timeout_s - 1 < detect_s < timeout_s + 30
    ranks = {r["rank"]: r for r in hang["ranks"]}
    assert ranks[1]["state"].startswith("stopped") and ranks[0]["state"] != ranks[1]["state"]
    stack0 = (job_dir / "LOG0" / "stack.txt").read_text()
    stack1 = (job_dir / "LOG1" / "stack.txt").read_text()
    assert "deeplab/train.py" in stack0 or "train.py" in stack0
    assert "stopped (by a signal)" in stack1 and "train.py" in stack1
    assert ranks[0]["waiting_in"] and ranks[1]["waiting_in"]
    assert_no_job_process(job_dir)
