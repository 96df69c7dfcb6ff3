"""Real MindSpore under launch-train's dynamic start (CPU): an all-reduce, and 2-rank data-parallel training."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from launcher.launch import launch
from launcher.resolve import LaunchOptions, resolve_spec
from tests.fixtures.jobs import TRAIN_STEPS, assert_nothing_left, descendant_pids

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent


def test_dynamic_start_runs_a_mindspore_allreduce_across_two_workers(tmp_path):
    job_dir = tmp_path / "job"
    baseline = descendant_pids()
    options = LaunchOptions(platform="CPU", devices=2, job_dir=job_dir, tee="none",
                            entry=REPO / "tests" / "payloads" / "allreduce.py")
    console = io.StringIO()
    result = launch(resolve_spec(options, warn=lambda m: None), out=console, status_out=console)
    assert result.exit_code == 0, console.getvalue()
    for rank in range(2):
        got = json.loads((job_dir / f"LOG{rank}" / "allreduce.json").read_text())
        assert got == {"rank": rank, "size": 2, "sum": 3.0}
    scheduler_log = (job_dir / "scheduler" / "log.txt").read_text()
    assert "for 2 workers" in scheduler_log and "registered successfully" in scheduler_log
    assert_nothing_left(job_dir, baseline)


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
