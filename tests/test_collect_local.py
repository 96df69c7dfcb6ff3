"""collect-results on hand-built job dirs on this host: links, copies, hashes, problems, report."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import launcher.collect.collection as collection
from launcher.collect import CollectInputError, CollectRequest, collect
from launcher.collect.cli import main
from tests.fixtures.collect_jobs import RankSpec, make_job, sha256_of

MIB = 1 << 20


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    status = main(args + ["--no-hash-cache"])
    out, err = capsys.readouterr()
    return status, out, err


def tree(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under root -> (inode, mtime_ns, sha256): proves nothing changed."""
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, sha256_of(p))
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def good_job(tmp_path: Path) -> Path:
    return make_job(tmp_path / "jobs", [
        RankSpec(0, losses=[1.2, 0.9, 0.7, 0.55, 0.41, 0.38, 0.37, 0.36, 0.35, 0.34, 0.33, 0.32], steps_per_epoch=3,
                 step_time_ms=125.0, first_step_time_ms=4000.0,
                 ckpts={"deeplab-1_3.ckpt": 2 * MIB, "deeplab-2_3.ckpt": 2 * MIB + 17}),
        RankSpec(1, losses=[1.3, 0.95, 0.72, 0.6, 0.45, 0.39, 0.38, 0.37, 0.36, 0.35, 0.34, 0.31], steps_per_epoch=3,
                 step_time_ms=130.0, first_step_time_ms=4100.0),
    ])


def test_summary_numbers_are_the_logged_ones_and_hashes_match(good_job: Path, tmp_path: Path, capsys):
    results = tmp_path / "results"
    status, out, err = run_cli([str(good_job), "-o", str(results)], capsys)
    assert status == 0, err
    final = results / "job-20261126-0001"
    assert out.strip().splitlines()[-1] == f"report: {final / 'report.html'}"
    assert "\n  Sample predictions left out: no evaluation ran (deeplab-eval" in out
    summary = json.loads((final / "summary.json").read_text())
    rank0, rank1 = summary["ranks"]
    assert (rank0["final_loss"], rank1["final_loss"]) == (0.32, 0.31)
    assert (rank0["steps"], rank0["epochs"]) == (12, 4)
    assert rank0["mean_step_time_ms"] == 125.0 and rank0["first_epoch_step_time_ms"] == 4000.0
    assert rank0["batch_size"] == 4 and rank0["images_per_s"] == pytest.approx(4 * 1000 / 125.0)
    assert summary["throughput_images_per_s"] == pytest.approx(4000 / 125.0 + 4000 / 130.0)
    assert summary["wall_time_s"] == 60.0 and summary["problems"] == []
    assert [c["path"] for c in rank0["checkpoints"]] == ["LOG0/ckpt/deeplab-1_3.ckpt", "LOG0/ckpt/deeplab-2_3.ckpt"]
    for checkpoint in rank0["checkpoints"]:
        source = good_job / checkpoint["path"]
        assert checkpoint["sha256"] == sha256_of(source) == sha256_of(final / checkpoint["path"])
        assert checkpoint["size"] == source.stat().st_size
    # Same file system: checkpoints are hard links, logs are copies (a snapshot).
    manifest = {e["path"]: e for e in json.loads((final / "manifest.json").read_text())["files"]}
    ckpt = "LOG0/ckpt/deeplab-2_3.ckpt"
    assert manifest[ckpt]["method"] == "link"
    assert (final / ckpt).stat().st_ino == (good_job / ckpt).stat().st_ino
    assert manifest["LOG0/log.txt"]["method"] == "copy"
    assert (final / "LOG0/log.txt").stat().st_ino != (good_job / "LOG0/log.txt").stat().st_ino
    assert {"job.json", "scheduler/log.txt", "LOG1/env.sh"} <= set(manifest)
    assert all(e["sha256"] == sha256_of(final / e["path"]) for e in manifest.values())
    assert manifest["job.json"]["source"] == str(good_job / "job.json")
    # No eval: best checkpoint is rank 0's newest.
    assert summary["best_checkpoint"]["path"] == ckpt and summary["evaluation"] is None


def test_collecting_twice_overwrites_nothing_and_into_writes_elsewhere(good_job: Path, tmp_path: Path, capsys):
    results = tmp_path / "results"
    assert run_cli([str(good_job), "-o", str(results)], capsys)[0] == 0
    first = results / "job-20261126-0001"
    before = tree(first)
    status, out, err = run_cli([str(good_job), "-o", str(results)], capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "already exists" in err and "--into" in err
    assert tree(first) == before
    assert sorted(p.name for p in results.iterdir()) == ["job-20261126-0001"]  # no partial left over

    again = tmp_path / "elsewhere" / "second"
    status, out, err = run_cli([str(good_job), "-o", str(results), "--into", str(again)], capsys)
    assert status == 0, err
    assert tree(first) == before
    assert json.loads((again / "summary.json").read_text())["ranks"][0]["final_loss"] == 0.32
    status, _, err = run_cli([str(good_job), "--into", str(again)], capsys)
    assert status == 2 and "already exists" in err


def test_failed_rank_with_truncated_log_is_reported_and_the_rest_gathered(tmp_path: Path, capsys):
    job_dir = make_job(tmp_path / "jobs", [
        RankSpec(0, ckpts={"deeplab-1_2.ckpt": 4096}, exit_code=None, signal="SIGTERM"),
        RankSpec(1, losses=[0.9, 0.8, 0.75], exit_code=1,
                 extra_lines=["RuntimeError: <script>alert(1)</script> out of memory"],
                 truncate="epoch: 2 step: 2, loss is 0.7"),
    ], state="failed")
    status, out, err = run_cli([str(job_dir), "-o", str(tmp_path / "results")], capsys)
    assert status == 1
    final = tmp_path / "results" / "job-20261126-0001"
    summary = json.loads((final / "summary.json").read_text())
    rank0, rank1 = summary["ranks"]
    assert rank1["status"] == "failed" and rank1["exit_code"] == 1 and rank1["log_truncated"]
    assert rank1["final_loss"] == 0.75 and rank1["steps"] == 3  # the cut-off 0.7 is not trusted
    assert rank0["status"] == "failed" and rank0["signal"] == "SIGTERM"
    assert (final / "LOG0/ckpt/deeplab-1_2.ckpt").is_file() and rank0["checkpoints"][0]["sha256"]
    kinds = {(p["kind"], p["rank"]) for p in summary["problems"]}
    assert {("failed_rank", 1), ("truncated_log", 1), ("failed_rank", 0)} <= kinds
    failure = summary["first_failure"]
    assert failure["rank"] == 1 and failure["log"] == "LOG1/log.txt"
    assert failure["tail"].endswith("epoch: 2 step: 2, loss is 0.7")  # the tail shows what is really there
    assert "out of memory" in failure["tail"]
    assert "truncated_log" in err and "failed_rank" in err
    html = (final / "report.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html


def test_missing_rank_dir_is_reported_and_others_collected(tmp_path: Path, capsys):
    job_dir = make_job(tmp_path / "jobs", [RankSpec(0), RankSpec(1, write_dir=False), RankSpec(2)])
    status, out, err = run_cli([str(job_dir), "-o", str(tmp_path / "results")], capsys)
    assert status == 1
    final = tmp_path / "results" / "job-20261126-0001"
    summary = json.loads((final / "summary.json").read_text())
    assert [r["collected"] for r in summary["ranks"]] == [True, False, True]
    assert summary["problems"][0]["kind"] == "missing_rank_dir" and summary["problems"][0]["rank"] == 1
    assert summary["problems"][0]["host"] == "localhost"
    assert str(job_dir / "LOG1") in summary["problems"][0]["message"]
    assert (final / "LOG2/log.txt").is_file() and not (final / "LOG1").exists()
    assert summary["throughput_images_per_s"] is None  # rank 1 unknown: no made-up total


@pytest.mark.parametrize("setup, expected", [
    (lambda d: None, "no job.json here"),
    (lambda d: (d / "job.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "job.json").write_text('{"schema": 1, "job_id": "x"}'), "missing field"),
])
def test_bad_input_exits_2_with_one_line(tmp_path: Path, setup, expected):
    job_dir = tmp_path / "notajob"
    job_dir.mkdir()
    setup(job_dir)
    proc = subprocess.run([sys.executable, "-m", "launcher.collect.cli", str(job_dir), "-o", str(tmp_path / "results")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    assert expected in proc.stderr and str(job_dir) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_default_job_dir_is_newest_under_jobs(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_cli([], capsys)
    assert status == 2 and "jobs: no job directories" in err
    make_job(tmp_path / "jobs", [RankSpec(0)])
    status, out, err = run_cli([], capsys)
    assert status == 0, err
    assert (tmp_path / "results" / "job-20261126-0001" / "report.html").is_file()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.imgs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "srcset", "data", "action"):
                self.refs.append((tag, name, value or ""))
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag in ("script", "link", "iframe"):
            self.refs.append((tag, "", ""))


def test_report_is_self_contained_with_one_img_per_plot(tmp_path: Path, capsys):
    job_dir = make_job(tmp_path / "jobs", [
        RankSpec(0, ckpts={"a-1_2.ckpt": 100, "a-2_2.ckpt": 100}, eval_miou=0.61, eval_ckpt="/train/LOG0/ckpt/a-1_2.ckpt"),
        RankSpec(1, config_batch_size=6),
    ])
    assert run_cli([str(job_dir), "-o", str(tmp_path / "results")], capsys)[0] == 0
    final = tmp_path / "results" / "job-20261126-0001"
    links = _Links()
    links.feed((final / "report.html").read_text())
    # Timeline, loss curves, step time per rank, IoU per class (no confusion matrix in this eval.json).
    assert len(links.imgs) == 4
    assert all(tag == "img" and value.startswith("data:image/png;base64,") for tag, _, value in links.refs)
    for src in links.imgs:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((final / "summary.json").read_text())
    # The evaluated checkpoint wins over the newer one; its IoU table is in the summary.
    assert summary["best_checkpoint"]["path"] == "LOG0/ckpt/a-1_2.ckpt" and summary["best_checkpoint"]["mIoU"] == 0.61
    assert summary["evaluation"]["per_class_iou"]["aeroplane"] == 0.61
    assert summary["ranks"][1]["batch_size"] == 6 and summary["ranks"][1]["batch_size_source"] == "LOG1/config.yaml"


def test_report_without_logged_steps_has_no_plots(tmp_path: Path, capsys):
    job_dir = make_job(tmp_path / "jobs", [RankSpec(0, losses=[])], args=[])
    assert run_cli([str(job_dir), "-o", str(tmp_path / "results")], capsys)[0] == 0
    final = tmp_path / "results" / "job-20261126-0001"
    links = _Links()
    html = (final / "report.html").read_text()
    links.feed(html)
    assert len(links.imgs) == 1 and 'alt="Timeline per rank"' in html  # job.json's times only
    rank = json.loads((final / "summary.json").read_text())["ranks"][0]
    assert rank["batch_size"] is None and rank["batch_size_source"].startswith("unknown")


def test_a_failure_while_collecting_leaves_nothing_under_the_final_name(good_job: Path, tmp_path: Path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(collection, "render_report", broken)
    results = tmp_path / "results"
    with pytest.raises(RuntimeError, match="disk on fire"):
        collect(CollectRequest(job_dir=good_job, results_root=results, hash_cache=None))
    assert list(results.iterdir()) == []


def test_no_checkpoints_flag(good_job: Path, tmp_path: Path, capsys):
    status, _, err = run_cli([str(good_job), "-o", str(tmp_path / "results"), "--no-checkpoints"], capsys)
    assert status == 0, err
    final = tmp_path / "results" / "job-20261126-0001"
    assert not list(final.rglob("*.ckpt")) and (final / "LOG0/log.txt").is_file()
    summary = json.loads((final / "summary.json").read_text())
    assert summary["ranks"][0]["checkpoints"] == [] and summary["collection"]["checkpoints_collected"] is False


def test_across_file_systems_files_are_copied_and_hashed(good_job: Path, tmp_path: Path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is not a separate file system here")
    into = shm / f"collect-test-{os.getpid()}"
    try:
        outcome = collect(CollectRequest(job_dir=good_job, into=into, hash_cache=None))
        assert outcome.exit_status == 0
        manifest = json.loads((into / "manifest.json").read_text())["files"]
        assert {e["method"] for e in manifest} == {"copy"}
        for entry in manifest:
            assert entry["sha256"] == sha256_of(good_job / entry["path"]) == sha256_of(into / entry["path"])
    finally:
        import shutil
        shutil.rmtree(into, ignore_errors=True)


def test_hash_cache_spares_rereading_linked_checkpoints(good_job: Path, tmp_path: Path):
    cache = tmp_path / "cache.json"
    first = collect(CollectRequest(job_dir=good_job, into=tmp_path / "one", hash_cache=cache))
    second = collect(CollectRequest(job_dir=good_job, into=tmp_path / "two", hash_cache=cache))
    assert first.summary["collection"]["hashes_from_cache"] == 0
    assert second.summary["collection"]["hashes_from_cache"] == 2  # the two 2 MiB checkpoints
    assert first.summary["ranks"][0]["checkpoints"] == second.summary["ranks"][0]["checkpoints"]


def test_destination_exists_is_input_error(good_job: Path, tmp_path: Path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(CollectInputError, match="already exists"):
        collect(CollectRequest(job_dir=good_job, into=tmp_path / "taken", hash_cache=None))


def test_json_flag_prints_summary_json(good_job: Path, tmp_path: Path, capsys):
    status, out, err = run_cli([str(good_job), "-o", str(tmp_path / "results"), "--json"], capsys)
    assert status == 0, err
    written = json.loads((tmp_path / "results" / "job-20261126-0001" / "summary.json").read_text())
    assert json.loads(out) == written


def test_running_job_is_collected_as_a_snapshot_with_a_problem(tmp_path: Path, capsys):
    job_dir = make_job(tmp_path / "jobs", [RankSpec(0, exit_code=None)], state="running")
    status, _, err = run_cli([str(job_dir), "-o", str(tmp_path / "results")], capsys)
    assert status == 1 and "job_not_finished" in err
    summary = json.loads((tmp_path / "results" / "job-20261126-0001" / "summary.json").read_text())
    assert summary["ranks"][0]["status"] == "running" and summary["ranks"][0]["final_loss"] == 0.4
