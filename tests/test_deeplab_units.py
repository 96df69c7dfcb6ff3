"""Unit tests of the training program's parts: distributed detection, learning rates,
metrics, the masked loss and checkpoint files. Seconds in total; MindSpore runs on one thread."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from deeplab import cpu_tuning

cpu_tuning.apply_to_environ(threads=1)  # before anything imports MindSpore

from deeplab.checkpoints import (  # noqa: E402
    CheckpointError,
    CheckpointSaver,
    checkpoint_name,
    list_checkpoints,
    newest_checkpoint,
    read_checkpoint,
    restore_training,
    verify_crc,
)
from deeplab.distributed import DistributedError, DistributedStart, check_supported, detect  # noqa: E402
from deeplab.lr_schedule import LrSchedule  # noqa: E402
from deeplab.metrics import confusion_matrix, mean_iou, per_class_iou  # noqa: E402


# ---------------------------------------------------------------- distributed detection

def test_no_distributed_environment_is_a_single_process():
    start = detect({})
    assert start == DistributedStart("none")
    assert not start.is_distributed and start.ranks_on_host == 1


def test_dynamic_cluster_worker():
    env = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "4", "MS_NODE_ID": "3", "RANK_ID": "3",
           "MS_SCHED_HOST": "10.0.0.1", "MS_SCHED_PORT": "8118", "MS_LOCAL_WORKER": "2"}
    start = detect(env)
    assert (start.mode, start.rank_id, start.rank_size) == ("dynamic", 3, 4)
    assert (start.local_rank, start.ranks_on_host) == (1, 2)


def test_dynamic_worker_without_local_count_assumes_all_ranks_share_the_host():
    env = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "MS_NODE_ID": "1",
           "MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": "8118"}
    start = detect(env)
    assert start.rank_id == 1 and start.ranks_on_host == 2


def test_dynamic_cluster_scheduler_role_is_refused():
    with pytest.raises(DistributedError, match="scheduler"):
        detect({"MS_ROLE": "MS_SCHED", "MS_WORKER_NUM": "2", "MS_SCHED_HOST": "h", "MS_SCHED_PORT": "1"})


@pytest.mark.parametrize("env, message", [
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "MS_SCHED_PORT": "1"}, "MS_SCHED_HOST"),
    ({"MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "h", "MS_SCHED_PORT": "1"}, "MS_WORKER_NUM"),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "two", "MS_SCHED_HOST": "h", "MS_SCHED_PORT": "1"}, "integer"),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "RANK_ID": "2", "MS_SCHED_HOST": "h",
      "MS_SCHED_PORT": "1"}, "rank_id"),
    ({"RANK_SIZE": "8"}, "no distributed start-up"),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "OMPI_COMM_WORLD_RANK"),
])
def test_inconsistent_environments_are_refused_with_the_variable_named(env, message):
    with pytest.raises(DistributedError, match=message):
        detect(env)


def test_rank_table_start(tmp_path):
    table = tmp_path / "rank_table.json"
    table.write_text("{}")
    start = detect({"RANK_TABLE_FILE": str(table), "RANK_ID": "9", "RANK_SIZE": "16", "DEVICE_ID": "1"})
    assert (start.mode, start.rank_id, start.rank_size, start.device_id) == ("rank-table", 9, 16, 1)
    with pytest.raises(DistributedError, match="no such file"):
        detect({"RANK_TABLE_FILE": str(tmp_path / "missing.json"), "RANK_ID": "0", "RANK_SIZE": "1",
                "DEVICE_ID": "0"})
    with pytest.raises(DistributedError, match="Ascend only"):
        check_supported(start, "CPU")


def test_open_mpi_start_and_its_refusal_on_cpu():
    env = {"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}
    start = detect(env)
    assert (start.mode, start.rank_id, start.device_id, start.ranks_on_host) == ("mpirun", 5, 1, 4)
    check_supported(start, "GPU")
    with pytest.raises(DistributedError, match="dynamic cluster"):
        check_supported(start, "CPU")


def test_dynamic_wins_over_open_mpi_like_mindspore():
    env = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "MS_NODE_ID": "0", "MS_SCHED_HOST": "h",
           "MS_SCHED_PORT": "1", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2"}
    assert detect(env).mode == "dynamic"


# ---------------------------------------------------------------- learning rates

def test_poly_matches_the_reference_formula():
    rates = LrSchedule("poly", 0.01, total_steps=100, end_lr=0.001, power=0.9).rates()
    assert rates.shape == (100,) and rates.dtype == np.float32
    expected = [(0.01 - 0.001) * (1 - i / 100) ** 0.9 + 0.001 for i in range(100)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    assert np.all(np.diff(rates) < 0)


def test_cos_and_staircase_exp():
    cos = LrSchedule("cos", 0.1, total_steps=10).rates()
    np.testing.assert_allclose(cos, [0.1 * 0.5 * (1 + math.cos(math.pi * i / 10)) for i in range(10)], rtol=1e-6)
    exp = LrSchedule("exp", 0.1, total_steps=10, decay_rate=0.5, decay_step=4).rates()
    np.testing.assert_allclose(exp, [0.1] * 4 + [0.05] * 4 + [0.025] * 2, rtol=1e-6)


def test_warmup_rises_linearly_then_the_decay_starts_from_base():
    rates = LrSchedule("poly", 0.2, total_steps=14, warmup_steps=4, power=1.0).rates()
    np.testing.assert_allclose(rates[:4], [0.05, 0.1, 0.15, 0.2], rtol=1e-6)
    np.testing.assert_allclose(rates[4:], [0.2 * (1 - i / 10) for i in range(10)], rtol=1e-6)


@pytest.mark.parametrize("kwargs", [
    {"lr_type": "step"}, {"total_steps": 0}, {"warmup_steps": 10}, {"base_lr": 0.0}, {"end_lr": 1.0},
])
def test_bad_schedules_are_refused(kwargs):
    args = {"lr_type": "poly", "base_lr": 0.1, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError):
        LrSchedule(**args)


# ---------------------------------------------------------------- metrics

def test_confusion_matrix_counts_and_ignores_void():
    label = np.array([[0, 0, 1, 255], [2, 2, 1, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 2], [2, 0, 1, 1]], dtype=np.int64)
    matrix = confusion_matrix(label, pred, num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    assert matrix.sum() == 7  # the void pixel is not counted


def test_iou_nan_for_absent_classes_and_zero_for_false_positives():
    label = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 2])
    iou = per_class_iou(confusion_matrix(label, pred, num_classes=4))
    np.testing.assert_allclose(iou[:3], [1.0, 0.5, 0.0])
    assert math.isnan(iou[3])  # class 3: neither present nor predicted
    assert mean_iou(iou) == pytest.approx(0.5)
    assert math.isnan(mean_iou(np.array([np.nan, np.nan])))


def test_confusion_matrix_rejects_mismatched_shapes_and_out_of_range_predictions():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.zeros(4), np.full(4, 7), 3)


# ---------------------------------------------------------------- MindSpore parts

@pytest.fixture(scope="module")
def mindspore_cpu():
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")
    cpu_tuning.set_mindspore_threads(1)
    return ms


def _softmax_ce_numpy(logits, labels, ignore):
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    valid = labels != ignore
    n, _, h, w = logits.shape
    nn_, hh, ww = np.nonzero(valid)
    picked = logp[nn_, labels[valid].astype(int), hh, ww]
    return -picked.mean() if picked.size else 0.0


def test_loss_is_the_mean_over_valid_pixels_only(mindspore_cpu):
    ms = mindspore_cpu
    from deeplab.loss import SoftmaxCrossEntropyLoss

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 5, 4)).astype(np.int32)
    labels[0, :2] = 255
    loss = SoftmaxCrossEntropyLoss(3, 255)
    got = float(loss(ms.Tensor(logits), ms.Tensor(labels)).asnumpy())
    assert got == pytest.approx(_softmax_ce_numpy(logits, labels, 255), rel=1e-5)
    # Changing logits of void pixels must not change the loss.
    logits[0, :, :2] += 100.0
    assert float(loss(ms.Tensor(logits), ms.Tensor(labels)).asnumpy()) == pytest.approx(got, rel=1e-5)
    all_void = np.full_like(labels, 255)
    assert float(loss(ms.Tensor(logits), ms.Tensor(all_void)).asnumpy()) == 0.0


def _tiny_train_cell(ms, lr_steps=10):
    from mindspore import nn

    from deeplab.loss import NetWithLoss, SoftmaxCrossEntropyLoss

    class TwoConv(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, has_bias=True)
            self.bn = nn.BatchNorm2d(4)
            self.head = nn.Conv2d(4, 3, 1, has_bias=True)

        def construct(self, x):
            return self.head(ops_relu(self.bn(self.conv(x))))

    from mindspore import ops
    ops_relu = ops.relu
    net = NetWithLoss(TwoConv(), SoftmaxCrossEntropyLoss(3, 255))
    lr = ms.Tensor(np.linspace(0.1, 0.01, lr_steps).astype(np.float32))
    opt = nn.Momentum(net.trainable_params(), lr, 0.9)
    return nn.TrainOneStepCell(net, opt), opt


def _batch(ms):
    rng = np.random.default_rng(1)
    images = ms.Tensor(rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    labels = ms.Tensor(rng.integers(0, 3, size=(2, 8, 8)).astype(np.int32))
    return images, labels


def test_checkpoints_rotate_and_restore_weights_optimizer_state_and_step(mindspore_cpu, tmp_path):
    ms = mindspore_cpu
    cell, opt = _tiny_train_cell(ms)
    images, labels = _batch(ms)
    saver = CheckpointSaver(tmp_path, keep=2)
    for step in (1, 2, 3):
        cell(images, labels)
        saver.save(cell, step=step, epoch=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_name(2), checkpoint_name(3)]
    newest = newest_checkpoint(tmp_path)
    assert verify_crc(newest)
    saved = read_checkpoint(newest)
    assert any(name.startswith("moments.") for name in saved)

    fresh, fresh_opt = _tiny_train_cell(ms)
    state = restore_training(fresh, newest)
    assert (state.step, state.epoch) == (3, 1)
    assert int(fresh_opt.global_step.asnumpy()[0]) == 3
    for param in fresh.get_parameters():
        if param.name != "learning_rate":
            np.testing.assert_array_equal(param.asnumpy(), saved[param.name].asnumpy())
    # Restored momentum continues the same trajectory as the original cell.
    np.testing.assert_allclose(cell(images, labels).asnumpy(), fresh(images, labels).asnumpy(), rtol=1e-6)
    np.testing.assert_allclose(cell.network.network.conv.weight.asnumpy(),
                               fresh.network.network.conv.weight.asnumpy(), rtol=1e-5, atol=1e-7)


def test_corrupt_and_truncated_checkpoints_give_one_clear_error(mindspore_cpu, tmp_path):
    ms = mindspore_cpu
    cell, _ = _tiny_train_cell(ms)
    good = CheckpointSaver(tmp_path, keep=1).save(cell, step=1, epoch=0)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"this is not a checkpoint at all, just text" * 10)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for bad in (truncated, flipped, garbage, empty):
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(bad)
        assert str(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_partial_writes_are_never_listed_and_are_cleaned_up(mindspore_cpu, tmp_path):
    ms = mindspore_cpu
    cell, _ = _tiny_train_cell(ms)
    saver = CheckpointSaver(tmp_path, keep=3)
    saver.save(cell, step=4, epoch=0)
    # What a save killed mid-write leaves behind: a partial directory of a dead process
    # holding a half-written file, and stray temp files.
    dead_pid = 2 ** 22 + 12345
    partial_dir = tmp_path / f".partial-deeplab-{dead_pid}"
    partial_dir.mkdir()
    (partial_dir / checkpoint_name(8)).write_bytes(b"half")
    (partial_dir / "deeplab-step000008.tmp").write_bytes(b"half")
    (tmp_path / "deeplab-step000009.tmp").write_bytes(b"half")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
    assert newest_checkpoint(tmp_path).name == checkpoint_name(4)
    saver.save(cell, step=5, epoch=0)
    assert not partial_dir.exists()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5]
    assert not any(p.name.startswith(".partial") for p in tmp_path.iterdir())
    # A partial directory of another live process (a writer still at work) is left alone.
    live = tmp_path / f".partial-deeplab-{os.getppid()}"
    live.mkdir()
    assert saver.remove_stale_partials() == []
    assert live.exists()
