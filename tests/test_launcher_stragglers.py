"""Stragglers: the detector's judgement on timing lines (pure), and a real 2-rank training with one rank slowed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.run.stragglers import RATIO, SUSTAINED, StragglerDetector

REPO = Path(__file__).resolve().parents[1]


def timing(last_step: int, data: float, step: float = 0.2, probe: float = 0.002) -> str:
    return f"timing: steps {last_step - 19}-{last_step}, data wait {data:.4f} s, step {step:.4f} s, device probe {probe:.4f} s"


def feed_windows(detector: StragglerDetector, windows: list[dict[int, str]]) -> list[dict]:
    named = []
    for window in windows:
        for rank, line in window.items():
            named += detector.feed(rank, line, "t")
    return named


def test_a_rank_slow_at_its_data_for_three_windows_is_named_once():
    detector = StragglerDetector({0: "a", 1: "b"})
    windows = [{0: timing(20 * w, 0.002), 1: timing(20 * w, 0.09)} for w in range(1, 6)]
    named = feed_windows(detector, windows)
    assert len(named) == 1
    (record,) = named
    assert record["rank"] == 1 and record["host"] == "b" and record["metric"] == "data wait"
    assert record["step_s"] == 0.09 and record["median_s"] == 0.002 and record["ratio"] == 45.0
    assert "data wait" in record["reason"] and detector.named == [record]


def test_a_slow_device_is_named_by_its_probe():
    detector = StragglerDetector({0: "a", 1: "b", 2: "c", 3: "d"})
    windows = [{r: timing(20 * w, 0.001, probe=0.006 if r == 2 else 0.002) for r in range(4)}
               for w in range(1, SUSTAINED + 1)]
    (record,) = feed_windows(detector, windows)
    assert record["rank"] == 2 and record["metric"] == "device probe" and record["ratio"] == 3.0


@pytest.mark.parametrize("windows", [
    # healthy ranks a little apart: below the ratio
    [{0: timing(20 * w, 0.010), 1: timing(20 * w, 0.010 * (RATIO - 0.2))} for w in range(1, 10)],
    # far apart in ratio but not in time: below the floor (1 ms against 0.3 ms)
    [{0: timing(20 * w, 0.0003), 1: timing(20 * w, 0.001)} for w in range(1, 10)],
    # one slow window (a checkpoint save, an evaluation) now and then: never sustained
    [{0: timing(20 * w, 0.002), 1: timing(20 * w, 0.2 if w % SUSTAINED == 0 else 0.002)} for w in range(1, 10)],
])
def test_noise_names_no_one(windows):
    assert feed_windows(StragglerDetector({0: "a", 1: "b"}), windows) == []


def test_one_rank_alone_and_other_lines_name_no_one():
    assert feed_windows(StragglerDetector({0: "a"}), [{0: timing(20 * w, 5.0)} for w in range(1, 6)]) == []
    detector = StragglerDetector({0: "a", 1: "b"})
    assert detector.feed(0, "epoch: 1 step: 3, loss is 0.5", "t") == []
    assert detector.feed(0, "timing: steps 1-20, data wait nan s, step 0.2 s, device probe 0.1 s", "t") == []


CPU_CGROUPS = Path("/sys/fs/cgroup/cpu")


def _rank_processes(job_dir: Path, rank: int) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("LAUNCH_TRAIN_JOB_DIR") == str(job_dir) and env.get("RANK_ID") == str(rank):
            found.append(proc)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not (CPU_CGROUPS / "cgroup.procs").exists() or not os.access(CPU_CGROUPS, os.W_OK),
                    reason="needs the cgroup v1 cpu controller, writable (root)")
def test_a_throttled_rank_is_named_in_real_training(tmp_path, synthetic_voc):
    """Rank 1 gets 15% of a CPU (a cgroup CPU quota: a throttled device) once training runs: its device
    probe slows several-fold whatever else loads the machine. The launcher names it live, in job.json and
    in --status; the job runs to its end. A timing line every 2 steps: throttled from step 3 or 4 on,
    windows 5-6 to 13-14 are 5 slow ones in a row where SUSTAINED (3) name it; each throttled step
    costs about a second, so no more steps than that."""
    job_dir = tmp_path / "job"
    # The cgroup tree is the machine's: another test session running this test at the same time has
    # the same tmp_path name, so the pid keeps the two groups apart.
    group = CPU_CGROUPS / f"launch-train-test-{os.getpid()}-{tmp_path.name}"
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "--platform", "CPU", "--devices", "2",
                             "--job-dir", str(job_dir), "--tee", "none", "--status-interval", "600", "--",
                             "--config", "tiny_synthetic", "--data-root", str(synthetic_voc), "--train-steps", "14",
                             "--set", "timing_every_steps=2", "--set", "eval_every_epochs=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        log1 = job_dir / "LOG1" / "log.txt"
        while not (log1.exists() and "epoch: 2 step:" in log1.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.1)
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text("15000")
        for rank_proc in _rank_processes(job_dir, 1):
            (group / "cgroup.procs").write_text(str(rank_proc.pid))
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if group.exists():
            for pid in (group / "cgroup.procs").read_text().split():
                try:
                    (CPU_CGROUPS / "cgroup.procs").write_text(pid)
                except OSError:
                    pass
            group.rmdir()
    assert proc.returncode == 0, err[-3000:]
    stragglers = json.loads((job_dir / "job.json").read_text())["status"]["stragglers"]
    assert [record["rank"] for record in stragglers] == [1], (stragglers, err[-2000:])
    (record,) = stragglers
    assert record["ratio"] >= RATIO and record["metric"] in ("data wait", "device probe") and record["host"]
    assert "rank 1 on " in err and "is a straggler" in err
    shown = subprocess.run([sys.executable, "-m", "launcher.cli", "--status", str(job_dir)], capture_output=True,
                           text=True, timeout=60, cwd=REPO)
    assert "straggler: rank 1" in shown.stdout and "SLOW" in shown.stdout, shown.stdout
