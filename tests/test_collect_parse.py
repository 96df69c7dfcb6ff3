"""Pure parsing for collect-results: training log lines, eval.json, job.json, batch size."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from launcher.collect.evalfile import parse_eval
from launcher.job.job_record import JobFileError, load_job, newest_job_dir, parse_job
from launcher.collect.logparse import log_tail, parse_epoch_time_line, parse_loss_line, parse_miou_line, parse_training_log
from launcher.collect.summary import batch_size_from_args
from tests.fixtures.collect_jobs import RankSpec, make_job


def test_contract_lines_parse_exactly():
    assert parse_loss_line("epoch: 1 step: 20, loss is 0.11594") == (1, 20, 0.11594)
    assert parse_loss_line("epoch: 12 step: 732, loss is 1.5e-03") == (12, 732, 0.0015)
    timing = parse_epoch_time_line("Epoch time: 78748.379, per step time: 107.378")
    assert (timing.epoch_time_ms, timing.step_time_ms) == (78748.379, 107.378)
    assert parse_miou_line("mIoU = 0.65049") == 0.65049


def test_prefixed_lines_and_noise():
    text = ("[INFO] 2026-11-26 rank 0: epoch: 1 step: 3, loss is 2.5\n"
            "Traceback-looking noise: loss is fine\n"
            "epoch: one step: 2, loss is 1.0\n"
            "mIoU = \n")
    log = parse_training_log(text)
    assert [(p.epoch, p.step, p.loss) for p in log.losses] == [(1, 3, 2.5)]
    assert log.miou is None and not log.truncated


def test_nan_loss_is_kept_as_nan():
    log = parse_training_log("epoch: 1 step: 1, loss is nan\n")
    assert len(log.losses) == 1 and log.losses[0].loss != log.losses[0].loss


def test_truncated_last_line_is_dropped_not_misread():
    text = "epoch: 1 step: 1, loss is 0.9\nepoch: 1 step: 2, loss is 0.11594\nepoch: 1 step: 3, loss is 0.1"
    log = parse_training_log(text)
    assert log.truncated
    assert log.dropped_line == "epoch: 1 step: 3, loss is 0.1"
    assert log.final_loss == 0.11594 and log.steps == 2


def test_truncated_mid_number_epoch_line():
    log = parse_training_log("Epoch time: 1000.0, per step time: 100.0\nEpoch time: 2000.0, per st")
    assert log.truncated and [e.step_time_ms for e in log.epochs] == [100.0]


def test_empty_and_newline_only_logs():
    assert parse_training_log("").steps == 0
    assert not parse_training_log("\n").truncated


def test_steps_restarting_each_epoch_are_numbered_globally():
    lines = [f"epoch: {e} step: {s}, loss is {1.0 / (e * 10 + s)}" for e in (1, 2, 3) for s in (1, 2, 3, 4)]
    log = parse_training_log("\n".join(lines) + "\n")
    assert [p.global_step for p in log.losses] == list(range(1, 13))
    assert log.steps == 12


def test_global_steps_are_kept():
    lines = ["epoch: 1 step: 5, loss is 1", "epoch: 1 step: 10, loss is 0.5", "epoch: 2 step: 15, loss is 0.4"]
    assert parse_training_log("\n".join(lines) + "\n").steps == 15


def test_mean_step_time_leaves_out_the_compiling_first_epoch_and_last_miou_wins():
    text = ("Epoch time: 13000, per step time: 13000\nEpoch time: 600, per step time: 60\n"
            "Epoch time: 1000, per step time: 100\nmIoU = 0.1\nmIoU = 0.25\n")
    log = parse_training_log(text)
    assert log.mean_step_time_ms == 80.0 and log.first_epoch_step_time_ms == 13000
    assert log.miou == 0.25
    assert parse_training_log("Epoch time: 50, per step time: 5\n").mean_step_time_ms == 5


def test_log_tail():
    assert log_tail("a\nb\nc\nd\n", 2) == "c\nd"


def test_eval_json():
    result = parse_eval(json.dumps({"mIoU": 0.65049, "per_class_iou": {"background": 0.9, "cat": None},
                                    "ckpt": "/x/y.ckpt", "scales": [0.5, 1.0], "flip": True, "num_images": 8}))
    assert result.miou == 0.65049 and result.per_class_iou == {"background": 0.9, "cat": None}
    assert result.scales == (0.5, 1.0) and result.flip
    for bad in ("{", "[]", '{"per_class_iou": {}}', '{"mIoU": 1.5}', '{"mIoU": 0.5, "per_class_iou": []}'):
        with pytest.raises(ValueError):
            parse_eval(bad)


def test_batch_size_from_args():
    assert batch_size_from_args(["--set", "batch_size=8", "--set", "learning_rate=0.1"]) == 8
    assert batch_size_from_args(["--set=batch_size=3", "--set", "batch_size=5"]) == 5
    assert batch_size_from_args(["batch_size=4"]) is None  # not a --set value
    assert batch_size_from_args(["--config", "tiny_synthetic"]) is None


def test_job_json_round_trip(tmp_path: Path):
    job_dir = make_job(tmp_path, [RankSpec(0), RankSpec(1, exit_code=None, signal="SIGTERM")])
    job = load_job(job_dir)
    assert job.job_id == "job-20261126-0001" and [r.rank for r in job.ranks] == [0, 1]
    assert job.ranks[1].signal == "SIGTERM" and job.ranks[0].exit_code == 0
    assert job.hosts[0].local and job.scheduler_host == "localhost"


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema=2), "schema is 2"),
    (lambda d: d.pop("ranks"), "missing field 'ranks'"),
    (lambda d: d["ranks"][0].update(host="elsewhere"), "not in hosts"),
    (lambda d: d["ranks"][0].update(log_dir="../etc"), "plain directory name"),
    (lambda d: d.update(job_id="../x"), "cannot name a directory"),
])
def test_bad_job_json_is_one_clear_error(tmp_path: Path, mutate, message):
    job_dir = make_job(tmp_path, [RankSpec(0)])
    doc = json.loads((job_dir / "job.json").read_text())
    mutate(doc)
    (job_dir / "job.json").write_text(json.dumps(doc))
    with pytest.raises(JobFileError, match=message) as err:
        load_job(job_dir)
    assert str(job_dir / "job.json") in str(err.value) and "\n" not in str(err.value)


def test_parse_job_rejects_non_object():
    with pytest.raises(ValueError):
        parse_job([1, 2])


def test_newest_job_by_created(tmp_path: Path):
    older = make_job(tmp_path, [RankSpec(0)], job_id="b-older")
    newer = make_job(tmp_path, [RankSpec(0)], job_id="a-newer")
    for job_dir, created in ((older, "2026-11-25T00:00:00+00:00"), (newer, "2026-11-26T00:00:00+00:00")):
        doc = json.loads((job_dir / "job.json").read_text())
        doc["created"] = created
        (job_dir / "job.json").write_text(json.dumps(doc))
    assert newest_job_dir(tmp_path) == newer
    with pytest.raises(JobFileError, match="no job directories"):
        newest_job_dir(tmp_path / "empty")


def test_plan_gather_takes_each_host_once_and_the_scheduler_from_its_host(tmp_path: Path):
    from launcher.collect.gather import plan_gather

    hosts = [{"name": "here", "address": "127.0.0.1", "user": None, "port": 22, "local": True, "slots": 1},
             {"name": "a", "address": "10.0.0.2", "user": "u", "port": 2222, "local": False, "slots": 1},
             {"name": "b", "address": "10.0.0.3", "user": "u", "port": 22, "local": False, "slots": 1},
             {"name": "idle", "address": "10.0.0.4", "user": "u", "port": 22, "local": False, "slots": 1}]
    job_dir = make_job(tmp_path, [RankSpec(0, host="here"), RankSpec(1, host="a"), RankSpec(2, host="b"),
                                  RankSpec(3, host="a")], hosts=hosts,
                       host_dirs={"a": tmp_path / "a", "b": tmp_path / "b"})
    doc = json.loads((job_dir / "job.json").read_text())
    doc["scheduler"]["host"] = "a"
    plans = plan_gather(parse_job(doc))
    assert [(p.host.name if p.host else None, [r[0] for r in p.rank_dirs], p.job_files, p.scheduler) for p in plans] == [
        (None, [0], True, False), ("a", [1, 3], False, True), ("b", [2], False, False)]
    assert plans[1].host.port == 2222 and plans[1].host.job_dir == str(job_dir)  # same path on every host
