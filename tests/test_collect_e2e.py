"""collect-results end to end on the real 2-rank CPU training job (tests/fixtures/jobs.py)."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from launcher.collect import CollectRequest, collect
from tests.fixtures.jobs import TRAIN_STEPS
from tests.fixtures.collect_jobs import sha256_of

pytestmark = pytest.mark.slow  # needs the session's real MindSpore job


def last_logged_loss(log: Path) -> float:
    """Independently of the parser: the number after the last 'loss is'."""
    lines = [line for line in log.read_text().splitlines() if "loss is" in line]
    return float(lines[-1].rsplit("loss is", 1)[1])


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_collect_real_two_rank_job(two_rank_cpu_job: Path, tmp_path: Path):
    outcome = collect(CollectRequest(job_dir=two_rank_cpu_job, results_root=tmp_path / "results", hash_cache=None))
    assert outcome.exit_status == 0, outcome.problems
    summary = outcome.summary
    job = json.loads((two_rank_cpu_job / "job.json").read_text())
    assert summary["job_id"] == job["job_id"] and summary["state"] == "succeeded"
    assert [r["rank"] for r in summary["ranks"]] == [0, 1]
    for rank in summary["ranks"]:
        source_log = two_rank_cpu_job / f"LOG{rank['rank']}" / "log.txt"
        assert rank["final_loss"] == last_logged_loss(source_log)
        assert rank["steps"] == TRAIN_STEPS
        assert rank["status"] == "succeeded" and rank["exit_code"] == 0
        assert rank["mean_step_time_ms"] and rank["mean_step_time_ms"] > 0
        # The trainer writes its resolved config next to rank 0's checkpoints only.
        assert rank["batch_size"] and rank["batch_size_source"] == "LOG0/ckpt/config.yaml"
        assert rank["images_per_s"] == pytest.approx(rank["batch_size"] * 1000 / rank["mean_step_time_ms"])
    checkpoints = summary["ranks"][0]["checkpoints"]
    assert checkpoints, "rank 0 writes checkpoints"
    for checkpoint in checkpoints:
        assert checkpoint["sha256"] == sha256_of(two_rank_cpu_job / checkpoint["path"])
    assert summary["best_checkpoint"]["rank"] == 0
    assert summary["best_checkpoint"]["path"] in {c["path"] for c in checkpoints}
    assert (outcome.results_dir / "scheduler" / "log.txt").is_file()
    images = _Images()
    images.feed(outcome.report.read_text())
    # Timeline, loss curves, step times and the mIoU curve: tiny_synthetic evaluates on rank 0 after the last step.
    assert len(images.sources) == 4
    during = summary["training_evaluation"]
    assert during["rank"] == 0 and [p["step"] for p in during["curve"]] == [TRAIN_STEPS]
    assert during["best_checkpoint"] == "LOG0/ckpt/deeplab-best.ckpt"
