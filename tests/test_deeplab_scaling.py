"""Data parallel that pays: global batch and the scaled learning rate, warm-up, evaluation
during training with deeplab-best.ckpt, the keyed compile cache reused on resume.

Pure parts first (milliseconds), then real deeplab-train processes on the synthetic set
(tiny model, 1 thread, a handful of steps).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deeplab import compile_cache
from deeplab.batch_plan import plan_batch
from deeplab.config import ConfigError, load_config
from deeplab.lr_schedule import schedule_from_config, warmup_steps_of
from deeplab.train import data_workers, should_log
from deeplab.train_eval import eval_due, format_eval_line, is_better
from launcher.collect.logparse import parse_training_log
from tests.fixtures.processes import run_at_once
from tests.test_deeplab_train import (RUN_TIMEOUT, _env, _free_port, _train_cmd, assert_one_line_error,
                                      run_train, step_lines)

REPO = Path(__file__).resolve().parent.parent
EVAL_LINE = re.compile(r"^eval at step (\d+) \(epoch (\d+), '(\w+)', (\d+) images, scale ([0-9.]+), [0-9.]+ s\): "
                       r"mIoU = (\d\.\d{5})$")


# ---------------------------------------------------------------- batch plan and learning rate

@pytest.mark.parametrize("ranks, per_rank", [(1, 8), (2, 4), (8, 1)])
def test_a_global_batch_is_split_over_the_ranks_at_the_same_learning_rate(ranks, per_rank):
    cfg = load_config("tiny_synthetic")
    plan = plan_batch(cfg, ranks)
    assert (plan.per_rank_batch, plan.global_batch) == (per_rank, 8)
    assert plan.learning_rate == pytest.approx(cfg.learning_rate) and plan.lr_scale == 1
    assert f"batch {per_rank} per rank x {ranks} rank(s) = global batch 8, learning rate 0.05" in plan.describe()


def test_a_per_rank_batch_scales_the_learning_rate_linearly_with_the_ranks():
    cfg = load_config("tiny_synthetic", ["batch_size=2", "learning_rate=0.01", "end_lr=0.001"])
    assert cfg.global_batch_size == 0  # the per-rank batch given later wins over the preset's global one
    plan = plan_batch(cfg, 4)
    assert (plan.per_rank_batch, plan.global_batch, plan.reference_batch) == (2, 8, 2)
    assert plan.learning_rate == pytest.approx(0.04) and plan.end_lr == pytest.approx(0.004)
    assert "0.04 (= 0.01 x 8/2, linear scaling)" in plan.describe()
    # A stated reference batch: the rate is the one for 16 images, so 8 images get half of it.
    stated = plan_batch(cfg.replace(lr_reference_batch=16), 4)
    assert stated.learning_rate == pytest.approx(0.005)
    assert plan_batch(cfg.replace(global_batch_size=16, lr_reference_batch=8), 2).learning_rate == pytest.approx(0.02)


def test_a_global_batch_that_does_not_divide_is_refused_with_one_line():
    with pytest.raises(ConfigError, match=r"global_batch_size 8 is not divisible by the 3 ranks"):
        plan_batch(load_config("tiny_synthetic"), 3)


def test_batch_statements_layer_later_wins(tmp_path):
    assert load_config("tiny_synthetic").global_batch_size == 8
    both = load_config("tiny_synthetic", ["batch_size=3", "global_batch_size=4"])
    assert both.global_batch_size == 4  # one layer giving both: the global batch decides
    child = tmp_path / "child.yaml"
    child.write_text("base: tiny_synthetic\nbatch_size: 3\n")
    assert load_config(str(child)).global_batch_size == 0 and load_config(str(child)).batch_size == 3


def test_warmup_in_epochs_rises_linearly_then_decays_and_scales_with_the_batch():
    cfg = load_config("tiny_synthetic", ["warmup_epochs=0.5", "learning_rate=0.1"])
    assert warmup_steps_of(cfg, steps_per_epoch=10) == 5
    rates = schedule_from_config(cfg, total_steps=40, steps_per_epoch=10, lr_scale=2.0).rates()
    np.testing.assert_allclose(rates[:5], [0.04, 0.08, 0.12, 0.16, 0.2], rtol=1e-6)
    assert rates[5] == pytest.approx(0.2) and np.all(np.diff(rates[5:]) < 0)
    # A run shorter than the warm-up keeps one decay step instead of failing.
    assert len(schedule_from_config(cfg, total_steps=3, steps_per_epoch=10).rates()) == 3
    with pytest.raises(ConfigError, match="warmup_steps .* or warmup_epochs, not both"):
        load_config("tiny_synthetic", ["warmup_steps=3", "warmup_epochs=1"])


def test_logging_workers_and_eval_schedules():
    assert data_workers(0, threads=1) == 1 and data_workers(0, threads=4) == 4 and data_workers(2, threads=1) == 2
    logged = [s for s in range(1, 26) if should_log(s, (s - 1) % 12 + 1, 12, 25, every=10)]
    assert logged == [10, 12, 20, 24, 25]  # every 10th, each epoch's last and the final step
    assert [s for s in range(1, 5) if should_log(s, s, 12, 25, every=1)] == [1, 2, 3, 4]
    assert [e for e in range(1, 11) if eval_due(e, e * 10, True, 100, every_epochs=5)] == [5, 10]
    assert eval_due(3, 33, False, 33, every_epochs=5) and not eval_due(5, 50, True, 100, every_epochs=0)
    assert is_better(0.5, None) and is_better(0.6, 0.5) and not is_better(0.5, 0.5) and not is_better(float("nan"), None)


def test_eval_lines_are_the_mious_collect_results_reads():
    line = format_eval_line(370, 10, "val", 60, 1.5, 2.14, 0.812341)
    assert line == "eval at step 370 (epoch 10, 'val', 60 images, scale 1.5, 2.1 s): mIoU = 0.81234"
    log = parse_training_log(f"epoch: 10 step: 37, loss is 0.20000\n{line}\n")
    assert log.miou == pytest.approx(0.81234) and log.miou_curve == ((370, 0.81234),)


def test_compile_cache_key_follows_what_shapes_the_graph(tmp_path):
    cfg = load_config("tiny_synthetic").to_dict()
    key = compile_cache.cache_key(cfg, 100, 2, "CPU", "2.10.0")
    assert key == compile_cache.cache_key(dict(cfg), 100, 2, "CPU", "2.10.0")
    assert key != compile_cache.cache_key(cfg, 101, 2, "CPU", "2.10.0")  # the lr array is in the graph
    assert key != compile_cache.cache_key({**cfg, "crop_size": 65}, 100, 2, "CPU", "2.10.0")
    assert key != compile_cache.cache_key(cfg, 100, 1, "CPU", "2.10.0")
    env = {"LAUNCH_TRAIN_CKPT_DIR": str(tmp_path / "job-ckpt")}
    assert compile_cache.cache_dir(Path("ckpt"), key, 1, env) == tmp_path / "job-ckpt" / "compile_cache" / key / "rank1"
    assert compile_cache.cache_dir(tmp_path, key, 0, {}) == tmp_path / "compile_cache" / key / "rank0"
    target: dict[str, str] = {}
    assert compile_cache.enable(tmp_path / "c", target) and target["MS_COMPILER_CACHE_ENABLE"] == "1"
    assert not compile_cache.enable(tmp_path / "d", {"MS_COMPILER_CACHE_ENABLE": "0"})  # the user's "off" wins


# ---------------------------------------------------------------- real training runs

@pytest.mark.slow
def test_a_global_batch_that_does_not_divide_stops_deeplab_train_before_it_connects(synthetic_voc, tmp_path):
    # A worker of a 3-rank dynamic cluster: the batch plan is checked before init() connects.
    env = _env(MS_ROLE="MS_WORKER", MS_WORKER_NUM="3", MS_NODE_ID="0", RANK_ID="0", MS_SCHED_HOST="127.0.0.1",
               MS_SCHED_PORT=str(_free_port()))
    proc = run_train(synthetic_voc, tmp_path / "ckpt", "--set", "global_batch_size=8", env=env)
    assert_one_line_error(proc, "global_batch_size 8", "not divisible by the 3 ranks")


@pytest.mark.slow
def test_evaluation_during_training_logs_the_curve_and_keeps_the_best_checkpoint(synthetic_voc, tmp_path):
    from deeplab.checkpoints import list_checkpoints, read_checkpoint

    ckpt = tmp_path / "ckpt"
    # 16 images, batch 4: 4 steps per epoch; evaluation after epochs 1, 2 and the final step 10.
    proc = run_train(synthetic_voc, ckpt, "--train-steps", "10", "--set", "eval_every_epochs=1",
                     "--set", "train_eval_scale=1.0", "--set", "log_every_steps=3", "--set", "learning_rate=0.05")
    assert proc.returncode == 0, proc.stderr
    assert "global batch 4, learning rate 0.05" in proc.stdout
    evals = [m.groups() for m in map(EVAL_LINE.match, proc.stdout.splitlines()) if m]
    assert [(int(s), int(e), split, int(n)) for s, e, split, n, _scale, _m in evals] == [
        (4, 1, "val", 8), (8, 2, "val", 8), (10, 3, "val", 8)]
    mious = [float(m) for *_, m in evals]
    # Loss lines every 3rd step plus each epoch's last and the final one, numbered exactly.
    assert [(e, s) for e, s, _ in step_lines(proc.stdout)] == [(1, 3), (1, 4), (2, 2), (2, 4), (3, 1), (3, 2)]
    best = read_checkpoint(ckpt / "deeplab-best.ckpt")
    assert float(best["deeplab_miou"].asnumpy()) == pytest.approx(max(mious), abs=1e-5)
    assert int(best["deeplab_step"].asnumpy()) == int(evals[int(np.argmax(mious))][0])
    assert [s for s, _ in list_checkpoints(ckpt)] == [10]  # the best one is not a resume candidate
    assert parse_training_log(proc.stdout).miou_curve == tuple((int(s), float(m)) for s, *_, m in evals)

    # Resumed with another split: the existing best is replaced only by a better mIoU.
    before = (ckpt / "deeplab-best.ckpt").stat().st_mtime_ns
    again = run_train(synthetic_voc, ckpt, "--train-steps", "12", "--resume", "--eval-split", "train",
                      "--set", "eval_every_epochs=1", "--set", "train_eval_scale=1.0")
    assert again.returncode == 0, again.stderr
    (last,) = [m.groups() for m in map(EVAL_LINE.match, again.stdout.splitlines()) if m]
    assert last[:4] == ("12", "3", "train", "16")
    replaced = (ckpt / "deeplab-best.ckpt").stat().st_mtime_ns != before
    assert replaced == (float(last[5]) > max(mious))


@pytest.mark.slow
def test_compile_cache_is_filled_then_reused_on_resume_with_the_same_results(synthetic_voc, tmp_path):
    from deeplab.checkpoints import checkpoint_name

    first_dir = tmp_path / "a"
    first = run_train(synthetic_voc, first_dir, "--train-steps", "6", "--set", "save_checkpoint_steps=3",
                      "--set", "save_checkpoint_num=2")
    assert first.returncode == 0, first.stderr
    assert re.search(r"compile cache .*/compile_cache/[0-9a-f]{16}/rank0: empty, filling it", first.stdout)
    (cache,) = (first_dir / "compile_cache").iterdir()
    graphs = compile_cache.cached_graphs(cache / "rank0")
    assert graphs, list(cache.rglob("*"))
    stamps = {path: path.stat().st_mtime_ns for path in graphs}

    # Resume the same run from step 3 twice: with the cache and with compiling from scratch.
    (first_dir / checkpoint_name(6)).unlink()
    plain_dir = tmp_path / "b"
    shutil.copytree(first_dir, plain_dir, ignore=shutil.ignore_patterns("compile_cache"))
    # The two resumes share nothing (one thread each): they run at once.
    cached, plain = run_at_once([_train_cmd(synthetic_voc, first_dir, "--train-steps", "6", "--resume"),
                                 _train_cmd(synthetic_voc, plain_dir, "--train-steps", "6", "--resume",
                                            "--set", "compile_cache=false")], env=_env(), timeout=RUN_TIMEOUT)
    assert cached.returncode == 0 and plain.returncode == 0, (cached.stderr, plain.stderr)
    assert f"reusing {len(graphs)} graph(s)" in cached.stdout and "compile cache" not in plain.stdout
    assert "at step 3" in cached.stdout and "at step 3" in plain.stdout
    # The cached graph computes what a fresh compile does: same losses, step for step.
    assert step_lines(cached.stdout) == step_lines(plain.stdout) and len(step_lines(cached.stdout)) == 3
    assert {path: path.stat().st_mtime_ns for path in compile_cache.cached_graphs(cache / "rank0")} == stamps

    # Another step count is another graph (the lr array): a new key, compiled anew, not a crash.
    longer = run_train(synthetic_voc, first_dir, "--train-steps", "7", "--resume")
    assert longer.returncode == 0, longer.stderr
    assert "empty, filling it" in longer.stdout and len(list((first_dir / "compile_cache").iterdir())) == 2


@pytest.mark.slow
def test_launcher_ckpt_dir_holds_the_compile_cache(synthetic_voc, tmp_path):
    job_ckpt = tmp_path / "job-ckpt"
    proc = subprocess.run(_train_cmd(synthetic_voc, tmp_path / "own", "--train-steps", "1"), capture_output=True,
                          text=True, timeout=240, env=_env(LAUNCH_TRAIN_CKPT_DIR=str(job_ckpt)))
    assert proc.returncode == 0, proc.stderr
    assert compile_cache.cached_graphs(next((job_ckpt / "compile_cache").iterdir()) / "rank0")


@pytest.mark.slow
def test_fused_gradient_all_reduce_trains_exactly_like_the_per_tensor_one(synthetic_voc, tmp_path):
    from tests.test_deeplab_train import _start_cluster

    # The two clusters run at once (they share nothing but the data set, read-only).
    clusters = {}
    try:
        for fused in ("true", "false"):
            ckpt = tmp_path / f"ckpt-{fused}"
            clusters[fused] = _start_cluster(tmp_path / fused, synthetic_voc, [ckpt, ckpt], "--train-steps", "4",
                                             "--set", f"fuse_allreduce={fused}", "--set", "global_batch_size=4")
        outputs = {fused: cluster.finish() for fused, cluster in clusters.items()}
    finally:
        for cluster in clusters.values():
            cluster.kill()
    runs = {}
    for fused in ("true", "false"):
        for code, out in outputs[fused]:
            assert code == 0, out
            assert "batch 2 per rank x 2 rank(s) = global batch 4, learning rate 0.05" in out
        runs[fused] = [step_lines(out) for _, out in outputs[fused]]
    # Both reducers average the same gradients: step 2's loss (after one update) agrees to the
    # printed digits; later steps drift only by float summation order (measured 2e-3 at step 4),
    # where a wrong mean (a sum, a missing tensor) moves the loss by far more.
    fused, per_tensor = runs["true"], runs["false"]
    for rank in (0, 1):
        ours, theirs = [l for *_, l in fused[rank]], [l for *_, l in per_tensor[rank]]
        assert len(ours) == 4
        np.testing.assert_allclose(ours[:2], theirs[:2], atol=2e-5)
        np.testing.assert_allclose(ours, theirs, rtol=5e-3)


FUSED_REDUCER_ON_RESNET101 = """
import sys
import numpy as np
import mindspore as ms
from mindspore import Tensor, ops
from deeplab.config import load_config
from deeplab.grad_fusion import FusedGradReducer
from deeplab.model.builders import build_model

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
params = build_model(load_config("voc_r101_os16")).trainable_params()
reducer = FusedGradReducer(params, rank_size=4)
reducer.all_reduce = ops.Identity()  # one process has no collective group; the rest is what ranks compile
rng = np.random.default_rng(0)
grads = tuple(Tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32)) for p in params)
out = reducer(grads)
assert len(out) == len(grads) == len(params)
for o, g in zip(out, grads):
    assert o.shape == g.shape
    np.testing.assert_allclose(o.asnumpy(), g.asnumpy() / 4, rtol=1e-6)
print("compiled", len(params))
"""


@pytest.mark.slow
def test_the_fused_reducer_compiles_and_slices_back_every_gradient_of_resnet101(tmp_path):
    # 332 gradients: the first reducer (comprehensions, ops.split) exceeded MindSpore's call depth limit.
    script = tmp_path / "fused_r101.py"  # MindSpore compiles cells from source files only
    script.write_text(FUSED_REDUCER_ON_RESNET101)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "GLOG_v": "3", "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["compiled", "332"]


# ---------------------------------------------------------------- collect-results: the curve and the best checkpoint

def test_collect_results_reads_the_miou_curve_and_names_the_best_checkpoint():
    from launcher.collect.plots import miou_curve
    from launcher.collect.summary import Checkpoint, RankInputs, best_checkpoint, training_evaluation

    lines = [format_eval_line(step, step // 10, "val", 60, 1.5, 1.0, miou)
             for step, miou in ((10, 0.41), (20, 0.72), (30, 0.70))]
    log = parse_training_log("epoch: 1 step: 10, loss is 0.50000\n" + "\n".join(lines) + "\n")
    kept = [Checkpoint("LOG0/ckpt/deeplab-best.ckpt", 10, "ab", 2.0), Checkpoint("LOG0/ckpt/deeplab-step000030.ckpt", 10, "cd", 3.0)]
    ranks = {0: RankInputs(collected=True, log=log, checkpoints=kept), 1: RankInputs(collected=True, log=parse_training_log(""))}
    during = training_evaluation(ranks)
    assert during == {"rank": 0, "curve": [{"step": 10, "mIoU": 0.41}, {"step": 20, "mIoU": 0.72}, {"step": 30, "mIoU": 0.7}],
                      "best_step": 20, "best_mIoU": 0.72, "best_checkpoint": "LOG0/ckpt/deeplab-best.ckpt"}
    best = best_checkpoint(ranks)
    assert best["path"] == "LOG0/ckpt/deeplab-best.ckpt" and best["mIoU"] == 0.72
    assert "during training (step 20" in best["reason"]
    assert miou_curve(during).png_base64
    # Without evaluation during training: the newest checkpoint of rank 0, as before.
    plain = {0: RankInputs(collected=True, log=parse_training_log("epoch: 1 step: 1, loss is 1.00000\n"), checkpoints=kept[1:])}
    assert training_evaluation(plain) is None and best_checkpoint(plain)["reason"].startswith("newest")
