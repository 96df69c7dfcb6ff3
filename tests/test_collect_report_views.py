"""report.html's timeline and confusion matrix, and the one-line notes that replace a section
that has no input. The timeline cases run real jobs of tests/payloads/rank_behaviour.py on
fake Ascend devices (rank-table start: real processes, no MindSpore), so they take seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.collect import CollectRequest, collect
from launcher.collect.evalfile import parse_eval
from launcher.collect.plots import confusion_matrix, timeline
from launcher.collect.timeline import build_timeline
from tests.fixtures.collect_jobs import RankSpec, make_job

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")
LAUNCH = [sys.executable, "-m", "launcher.cli"]




def run_job(job_dir: Path, hccn_conf: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, "--job-dir", str(job_dir), "--entry", PAYLOAD, "--platform", "Ascend",
                           "--hccn-conf", str(hccn_conf), "--devices", "2", "--tee", "none", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def collected(job_dir: Path, tmp_path: Path):
    return collect(CollectRequest(job_dir=job_dir, results_root=tmp_path / "results", hash_cache=None))


def test_a_job_that_restarted_shows_the_restart_in_its_timeline(tmp_path, hccn_conf):
    job_dir = tmp_path / "job"
    done = run_job(job_dir, hccn_conf, "--max-restarts", "2", "--", "--fail-rank", "1", "--fail-attempts", "1",
                   "--exit-code", "4", "--steps", "3")
    assert done.returncode == 0, done.stderr
    outcome = collected(job_dir, tmp_path)
    timeline_doc = outcome.summary["timeline"]
    assert timeline_doc["rows_are"] == "ranks" and timeline_doc["rows"] == 2
    (restart,) = [e for e in timeline_doc["events"] if e["kind"] == "restart"]
    # job.json records every attempt (status.attempts): the restart is drawn when it happened, with its cause.
    assert restart["row"] is None and restart["label"].startswith("restart 1: rank 1 on ")
    assert "failed (exit code 4)" in restart["label"]
    status = json.loads((job_dir / "job.json").read_text())["status"]
    second_start = status["attempts"][1]["started"]
    assert restart["at_s"] == pytest.approx(_seconds_between(status["started"], second_start), abs=1e-3)
    html = outcome.report.read_text()
    assert "<h2>Timeline</h2>" in html and 'alt="Timeline per rank"' in html
    assert "records their number, not their times or causes" not in html


def _seconds_between(earlier: str, later: str) -> float:
    from launcher.collect.timeline import parse_time

    return parse_time(later) - parse_time(earlier)


def test_a_job_that_hung_and_restarted_shows_both_in_its_timeline(tmp_path, hccn_conf):
    job_dir = tmp_path / "job"
    # Both ranks log 3 steps, then sleep: no new step within 3 s is a hang; it is restarted once,
    # hangs again and is stopped.
    done = run_job(job_dir, hccn_conf, "--hang-timeout", "3", "--first-step-timeout", "60", "--max-restarts", "1",
                   "--", "--steps", "3", "--sleep", "120")
    assert done.returncode == 124, done.stderr
    outcome = collected(job_dir, tmp_path)
    events = outcome.summary["timeline"]["events"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("restart") == 1
    hung = [e for e in events if e["kind"] == "hang"]
    hang = json.loads((job_dir / "job.json").read_text())["status"]["hang"]
    stuck = [r for record in (*hang["earlier"], hang) for r in record["stuck_ranks"]]
    assert stuck and sorted(e["row"] for e in hung) == sorted(f"rank {r}" for r in stuck)
    restart = next(e for e in events if e["kind"] == "restart")
    assert restart["label"].startswith("restart 1: hung (no new step within")
    # Each attempt's hang: the first one before the restart, the last one after it.
    before = [e for e in hung if e["at_s"] < restart["at_s"]]
    after = [e for e in hung if e["at_s"] > restart["at_s"] + 3]
    assert before and after and len(before) + len(after) == len(hung)
    assert all("hung (no new step, quiet" in e["label"] for e in hung)
    assert 'alt="Timeline per rank"' in outcome.report.read_text()


def _big_job_document(hosts: int, per_host: int) -> dict:
    names = [f"node{h:03d}" for h in range(hosts)]
    ranks = [{"rank": h * per_host + d, "host": names[h]} for h in range(hosts) for d in range(per_host)]
    statuses = [{"rank": r["rank"], "host": r["host"], "exit_code": 0, "signal": None,
                 "started": "2026-12-01T10:01:00Z", "ended": "2026-12-01T11:00:00Z"} for r in ranks]
    statuses[min(17, len(statuses) - 1)]["exit_code"] = 1  # with 64 hosts: node002's bar turns red
    return {
        "hosts": [{"name": n} for n in names], "ranks": ranks,
        "status": {"state": "failed", "started": "2026-12-01T10:00:00Z", "ended": "2026-12-01T11:00:00Z",
                   "restarts": 1, "ranks": statuses,
                   # What a resilience change may add: drawn when present.
                   "excluded_hosts": [{"host": "node005", "at": "2026-12-01T10:00:50Z", "reason": "NIC down"}],
                   "spare_hosts": ["node063"],
                   "stragglers": [{"rank": 130, "at": "2026-12-01T10:30:00Z", "slowdown": 2.5}]},
    }


def test_512_ranks_are_drawn_one_row_per_host_with_resilience_events():
    tl = build_timeline(_big_job_document(64, 8))
    assert tl.by_host and len(tl.rows) == 64 and tl.rows[0] == "node000"
    bars = [s for s in tl.spans if s.outcome != "restarted"]
    assert len(bars) == 64  # one per host, not per rank
    assert next(s for s in bars if s.row == "node002").outcome == "failed"
    assert {e.kind for e in tl.events} >= {"restart", "excluded", "spare", "straggler"}
    straggler = next(e for e in tl.events if e.kind == "straggler")
    assert straggler.row == "node016" and straggler.at == pytest.approx(1800) and "2.5x slower" in straggler.label
    excluded = next(e for e in tl.events if e.kind == "excluded")
    assert excluded.row == "node005" and "NIC down" in excluded.label
    assert timeline(tl) is not None
    small = build_timeline(_big_job_document(1, 8))
    assert not small.by_host and small.rows == tuple(f"rank {r}" for r in range(8))


def test_confusion_matrix_reads_from_eval_json_and_is_drawn_row_normalised():
    doc = {"mIoU": 0.5, "per_class_iou": {"background": 0.9, "cat": 0.1, "dog": None},
           "confusion_matrix": [[90, 10, 0], [50, 50, 0], [0, 0, 0]]}
    result = parse_eval(json.dumps(doc))
    assert result.confusion_matrix == ((90, 10, 0), (50, 50, 0), (0, 0, 0))
    assert confusion_matrix([list(r) for r in result.confusion_matrix], list(result.per_class_iou)) is not None
    assert confusion_matrix([], []) is None
    for bad, says in (([[1, 2], [3]], "square"), ([[1, -1], [0, 0]], "negative"), ([[1, "x"], [0, 0]], "pixel count")):
        with pytest.raises(ValueError, match=says):
            parse_eval(json.dumps({**doc, "confusion_matrix": bad}))


def test_missing_inputs_leave_sections_out_with_one_line_notes(tmp_path):
    # No evaluation at all, and a job.json without a start time: notes, not empty sections or errors.
    job_dir = make_job(tmp_path / "jobs", [RankSpec(0), RankSpec(1)])
    doc = json.loads((job_dir / "job.json").read_text())
    doc["status"]["started"] = None
    (job_dir / "job.json").write_text(json.dumps(doc))
    outcome = collected(job_dir, tmp_path)
    html = outcome.report.read_text()
    assert "Timeline left out: job.json has no start time" in html
    assert "Evaluation and confusion matrix left out: no evaluation ran" in html
    assert "Sample predictions left out: no evaluation ran (deeplab-eval" in html
    assert outcome.summary["timeline"] is None

    # An older eval.json (no confusion matrix): the IoU bars stay, the matrix is a note.
    job_dir = make_job(tmp_path / "jobs2", [RankSpec(0, eval_miou=0.5)])
    html = collected(job_dir, tmp_path / "second").report.read_text()
    assert 'alt="IoU per class"' in html and "Confusion matrix left out: LOG0/eval.json has no confusion_matrix" in html


def test_a_bad_confusion_matrix_is_a_problem_not_a_traceback(tmp_path):
    job_dir = make_job(tmp_path / "jobs", [RankSpec(0, eval_miou=0.5)])
    eval_path = job_dir / "LOG0" / "eval.json"
    eval_path.write_text(json.dumps({**json.loads(eval_path.read_text()), "confusion_matrix": [[1, 2], [3]]}))
    outcome = collected(job_dir, tmp_path)
    assert [p.kind for p in outcome.problems] == ["bad_eval_json"]
    assert "LOG0/eval.json" in outcome.problems[0].message and "square" in outcome.problems[0].message


def test_odd_future_fields_are_drawn_or_dropped_never_raised():
    doc = _big_job_document(1, 2)
    doc["status"].update({
        "excluded_hosts": "node000", "spare_hosts": [7, None, {"name": "node009"}],
        "stragglers": [{"rank": [1]}, {"rank": True, "at": 5}, "node000"],
        "hang": {"stuck_ranks": [[0], "1", 1], "ranks": "x", "detected": 12},
        "attempts": [{"started": "2026-12-01T10:00:00Z", "ended": "2026-12-01T10:00:30Z", "cause": "rank 1 exit 4",
                      "hosts": ["node000"]}, {"started": "2026-12-01T10:01:00Z"}],
    })
    tl = build_timeline(doc)
    restart = next(e for e in tl.events if e.kind == "restart")
    assert restart.at == 60 and restart.label == "restart 1: rank 1 exit 4"
    assert [e.row for e in tl.events if e.kind == "hang"] == ["rank 1"]
    assert timeline(tl) is not None
    assert build_timeline({"status": "nonsense"}) is None and build_timeline({}) is None


def test_predict_without_an_evaluation_says_why_none_could_be_run(tmp_path):
    # The job's args name no --data-root: nothing to evaluate on.
    job_dir = make_job(tmp_path / "jobs", [RankSpec(0, ckpts={"deeplab-step000004.ckpt": 64})])
    for checkpoint in job_dir.glob("LOG0/**/*.ckpt"):  # written in 2023, long before this job
        os.utime(checkpoint, (1_700_000_000, 1_700_000_000))
    outcome = collect(CollectRequest(job_dir=job_dir, results_root=tmp_path / "r1", hash_cache=None, predict=2))
    assert outcome.summary["predictions"]["note"] == ("Sample predictions left out: no evaluation ran, and the job's "
                                                      "arguments name no --config and --data-root to run one.")
    assert "Sample predictions left out: no evaluation ran, and the job" in outcome.report.read_text()
    # Its checkpoint's mtime (2023) is long before this job: not drawn, and said so.
    assert [e for e in outcome.summary["timeline"]["events"] if e["kind"] == "checkpoint"] == []
    assert "1 checkpoint(s) written outside this job's time" in outcome.summary["timeline"]["notes"][0]

    # deeplab-eval runs (a real process) and refuses the data root: its one line is the note.
    job_dir = make_job(tmp_path / "jobs2", [RankSpec(0, ckpts={"deeplab-step000004.ckpt": 64})],
                       args=["--config", "tiny_synthetic", "--data-root", str(tmp_path / "gone")])
    outcome = collect(CollectRequest(job_dir=job_dir, results_root=tmp_path / "r2", hash_cache=None, predict=2))
    note = outcome.summary["predictions"]["note"]
    assert note == ("Sample predictions left out: deeplab-eval failed (exit 2): "
                    f"deeplab-eval: --data-root {tmp_path / 'gone'}: no such directory.")
    assert not (outcome.results_dir / "predictions").exists() and outcome.exit_status == 0


@pytest.mark.parametrize("value", ["-1", "101"])
def test_a_predict_count_out_of_range_is_one_line_and_exit_2(tmp_path, capsys, value):
    from launcher.collect.cli import main

    job_dir = make_job(tmp_path / "jobs", [RankSpec(0)])
    assert main([str(job_dir), "-o", str(tmp_path / "results"), "--predict", value]) == 2
    err = capsys.readouterr().err
    assert err == f"collect-results: --predict {value}: must be 0..100\n"
    assert not (tmp_path / "results").exists()
