"""Supervision with real processes: failures stop the whole job, signals, restarts, no leftovers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.jobs import assert_nothing_left, descendant_pids, processes_mentioning

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")
LAUNCH = [sys.executable, "-m", "launcher.cli"]




def ascend(hccn_conf: Path, devices: int) -> list[str]:
    """Rank-table start on fake Ascend devices: real processes, no scheduler, no MindSpore."""
    return ["--platform", "Ascend", "--hccn-conf", str(hccn_conf), "--devices", str(devices)]


def launch_cli(job_dir: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, "--job-dir", str(job_dir), "--entry", PAYLOAD, *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def job_status(job_dir: Path) -> dict:
    return json.loads((job_dir / "job.json").read_text())["status"]


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_failing_rank_stops_every_other_rank_and_is_named(tmp_path, hccn_conf):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = launch_cli(job_dir, *ascend(hccn_conf, 4), "--", "--fail-rank", "2", "--exit-code", "3", "--sleep", "0.5")
    assert done.returncode == 3, done.stderr
    assert "rank 2 on" in done.stderr and "failed (exit code 3)" in done.stderr
    assert str(job_dir / "LOG2" / "log.txt") in done.stderr
    assert "rank 2 failing with exit code 3" in done.stderr  # the tail of its log
    status = job_status(job_dir)
    assert status["state"] == "failed" and status["exit_code"] == 3
    assert status["first_failure"]["rank"] == 2 and status["first_failure"]["exit_code"] == 3
    assert status["first_failure"]["log"] == "LOG2/log.txt"
    others = [r for r in status["ranks"] if r["rank"] != 2]
    assert all(r["signal"] == "SIGTERM" and r["exit_code"] is None for r in others), others
    assert_nothing_left(job_dir, baseline)


def test_a_killed_rank_in_a_dynamic_job_stops_workers_scheduler_and_escaped_children(tmp_path):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = launch_cli(job_dir, "--platform", "CPU", "--devices", "2", "--",
                      "--spawn-orphan", "--kill-rank", "1", "--signal", "SIGKILL", "--sleep", "1")
    assert done.returncode == 128 + signal.SIGKILL, done.stderr
    assert "rank 1 on" in done.stderr and "killed by SIGKILL" in done.stderr
    status = job_status(job_dir)
    assert status["first_failure"]["signal"] == "SIGKILL" and status["first_failure"]["exit_code"] is None
    # Every rank left a setsid'd grandchild outside its process group; none survives.
    assert_nothing_left(job_dir, baseline)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_to_the_launcher_stops_every_rank(tmp_path, hccn_conf, sig, code):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    # --ignore-term: the ranks survive SIGTERM, so the SIGKILL after the grace period is exercised too.
    # --grace 0: no "save and stop" first (tests/faults/test_preemption.py has that).
    proc = subprocess.Popen([*LAUNCH, "--job-dir", str(job_dir), "--entry", PAYLOAD, *ascend(hccn_conf, 2),
                             "--grace", "0", "--", "--sleep", "120", "--ignore-term"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_for(lambda: all((job_dir / f"LOG{r}" / "record.json").exists() for r in range(2)))
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == code, err
    assert "interrupted" in err
    status = job_status(job_dir)
    assert status["state"] == "interrupted" and status["exit_code"] == code
    assert {r["signal"] for r in status["ranks"]} == {"SIGKILL"}
    assert_nothing_left(job_dir, baseline)


def test_max_restarts_restarts_the_whole_job_then_fails(tmp_path, hccn_conf):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = launch_cli(job_dir, *ascend(hccn_conf, 2), "--max-restarts", "2", "--",
                      "--fail-rank", "0", "--exit-code", "4")
    assert done.returncode == 4, done.stderr
    assert done.stderr.count("restarting the whole job") == 2
    status = job_status(job_dir)
    assert status["restarts"] == 2 and status["state"] == "failed"
    for rank in range(2):
        assert (job_dir / f"LOG{rank}" / "log.txt").read_text().count("==== launch-train: restart") == 2
    # Rank 0 ran (and failed) three times; rank 1 may be stopped before it prints anything.
    assert (job_dir / "LOG0" / "log.txt").read_text().count("rank 0 failing with exit code 4") == 3
    assert_nothing_left(job_dir, baseline)


def test_an_entry_script_sees_the_attempt_number_and_succeeds_after_a_restart(tmp_path, hccn_conf):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = launch_cli(job_dir, *ascend(hccn_conf, 2), "--max-restarts", "3", "--",
                      "--fail-rank", "1", "--fail-attempts", "2", "--exit-code", "4")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("restarting the whole job") == 2
    status = job_status(job_dir)
    assert status["state"] == "succeeded" and status["restarts"] == 2
    log = (job_dir / "LOG1" / "log.txt").read_text()
    attempts = [line.split()[-1] for line in log.splitlines() if line.startswith("rank 1 started pid")]
    assert attempts == ["0", "1", "2"]
    assert log.count("rank 1 failing with exit code 4") == 2
    for rank in range(2):
        env = json.loads((job_dir / f"LOG{rank}" / "record.json").read_text())["env"]  # the last attempt's
        assert env["LAUNCH_TRAIN_RESTART_COUNT"] == "2" and env["LAUNCH_TRAIN_MAX_RESTARTS"] == "3"
        assert env["LAUNCH_TRAIN_CKPT_DIR"] == str(job_dir / "LOG0" / "ckpt")
        assert env["DEVICE_TARGET"] == "Ascend"
        assert "export LAUNCH_TRAIN_RESTART_COUNT=2" in (job_dir / f"LOG{rank}" / "env.sh").read_text()
    assert_nothing_left(job_dir, baseline)


def test_a_successful_job_records_everything_and_run_sh_reproduces_a_rank(tmp_path):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    injection = f"$(touch {tmp_path}/pwned);`touch {tmp_path}/pwned`"
    done = launch_cli(job_dir, "--platform", "CPU", "--devices", "2", "--tee", "all", "--env", "EXTRA=it's here",
                      "--env", f"INJECT={injection}", "--", "--steps", "3", "extra arg", injection)
    assert done.returncode == 0, done.stderr
    document = json.loads((job_dir / "job.json").read_text())
    assert document["status"]["state"] == "succeeded" and document["status"]["exit_code"] == 0
    assert [r["exit_code"] for r in document["status"]["ranks"]] == [0, 0]
    host = document["hosts"][0]["name"]
    assert f"[{host}:1] epoch: 1 step: 3, loss is 0.33333" in done.stdout
    assert f"[{host}:0] rank 0 done" in done.stdout
    for rank in document["ranks"]:
        record = json.loads((job_dir / rank["log_dir"] / "record.json").read_text())
        assert record["cwd"] == str(job_dir / rank["log_dir"])
        assert record["extra"] == ["extra arg", injection] and record["env"]["EXTRA"] == "it's here"
        assert record["env"]["INJECT"] == injection
        assert {k: record["env"][k] for k in rank["env"]} == rank["env"]
        assert record["affinity"] == rank["cpus"]
    # By hand: the same rank, the same environment, the same command, output to the same log.
    (job_dir / "LOG1" / "record.json").unlink()
    subprocess.run(["bash", "LOG1/run.sh"], cwd=job_dir, check=True, timeout=30, env={"PATH": os.environ["PATH"]})
    again = json.loads((job_dir / "LOG1" / "record.json").read_text())
    assert {k: again["env"][k] for k in document["ranks"][1]["env"]} == document["ranks"][1]["env"]
    assert again["argv"] == ["--steps", "3", "extra arg", injection]
    assert not (tmp_path / "pwned").exists()  # every value reached the shell quoted
    assert (job_dir / "LOG1" / "log.txt").read_text().count("rank 1 done") == 2
    assert_nothing_left(job_dir, baseline)


def test_library_call_returns_failures_as_data(tmp_path, hccn_conf):
    import io

    from launcher.run.failures import JobFailed
    from launcher.launch import launch
    from launcher.job.options import LaunchOptions
    from launcher.job.resolve import resolve_spec

    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    options = LaunchOptions(platform="Ascend", hccn_conf=hccn_conf, devices=2, job_dir=job_dir,
                            entry=Path(PAYLOAD), args=("--fail-rank", "1", "--exit-code", "9"), tee="none")
    console = io.StringIO()
    result = launch(resolve_spec(options, warn=lambda m: None), out=console, status_out=console)
    assert result.exit_code == 9 and result.state == "failed"
    assert result.first_failure.rank == 1 and result.first_failure.exit_code == 9
    assert "rank 1 failing" in result.first_failure.tail
    with pytest.raises(JobFailed, match="rank 1 on .* failed \\(exit code 9\\)"):
        result.check()
    assert_nothing_left(job_dir, baseline)


def test_ranks_die_with_a_launcher_that_is_killed_outright(tmp_path, hccn_conf):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    proc = subprocess.Popen([*LAUNCH, "--job-dir", str(job_dir), "--entry", PAYLOAD, *ascend(hccn_conf, 2), "--",
                             "--sleep", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        wait_for(lambda: all((job_dir / f"LOG{r}" / "record.json").exists() for r in range(2)))
        proc.kill()  # SIGKILL: the launcher gets no chance to clean up
        proc.wait(timeout=10)
        wait_for(lambda: not processes_mentioning(str(job_dir)), timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert_nothing_left(job_dir, baseline)


def test_a_failed_scheduler_stops_the_workers_and_user_templates_are_used(tmp_path):
    # A user template directory overriding only the scheduler's script: this one fails at once.
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "scheduler.sh.j2").write_text(
        "#!/usr/bin/env bash\ncd \"$(dirname \"${BASH_SOURCE[0]}\")\"\n"
        "echo 'custom scheduler for {{ spec.job_id }} on port {{ scheduler.port }}' >> log.txt\nexit 3\n")
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    done = launch_cli(job_dir, "--platform", "CPU", "--devices", "2", "--templates", str(templates), "--",
                      "--sleep", "120")
    assert done.returncode == 1, done.stderr
    assert "scheduler on" in done.stderr and "failed (exit code 3)" in done.stderr
    assert "custom scheduler for" in (job_dir / "scheduler" / "log.txt").read_text()
    assert "source ./env.sh" in (job_dir / "LOG0" / "run.sh").read_text()  # the built-in run.sh.j2 still applies
    status = job_status(job_dir)
    assert status["state"] == "failed" and status["exit_code"] == 1
    assert {r["signal"] for r in status["ranks"]} == {"SIGTERM"}
    assert_nothing_left(job_dir, baseline)
