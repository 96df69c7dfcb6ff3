"""deeplab-export: MindIR round trip (output equals the checkpoint's network) and bad input."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deeplab import cpu_tuning

cpu_tuning.apply_to_environ(threads=1)

import mindspore as ms  # noqa: E402
from mindspore import nn  # noqa: E402

from deeplab.config import load_config  # noqa: E402
from deeplab.export import ExportOptions, UsageError, export_model  # noqa: E402
from deeplab.model import build_model  # noqa: E402

pytestmark = pytest.mark.timeout(300)
EXPORT = [sys.executable, "-m", "deeplab.export"]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}
CROP = 49


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A freshly built tiny network (decoder on, to export every head part) and its checkpoint."""
    ms.set_device("CPU")
    cpu_tuning.set_mindspore_threads(1)
    ms.set_seed(5)
    net = build_model(load_config("tiny_synthetic", ["decoder_output_stride=4", "seg_num_classes=3"]))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    ms.save_checkpoint(net, str(path))
    net.set_train(False)
    return net, path


class TrainingWrapper(nn.Cell):
    """Stands in for deeplab-train's NetWithLoss: the model under the attribute ``network``."""

    def __init__(self, network):
        super().__init__()
        self.network = network


def run_exported(path: Path, images: np.ndarray) -> np.ndarray:
    graph = nn.GraphCell(ms.load(str(path)))
    return graph(ms.Tensor(images)).asnumpy()


def test_exported_mindir_computes_what_the_checkpoint_computes(tiny_checkpoint, tmp_path):
    net, ckpt = tiny_checkpoint
    out = export_model(ExportOptions(config="tiny_synthetic", ckpt=ckpt, crop=CROP, out=tmp_path / "tiny.mindir",
                                     overrides=("decoder_output_stride=4", "seg_num_classes=3")))
    assert out == tmp_path / "tiny.mindir" and sorted(p.name for p in tmp_path.iterdir()) == ["tiny.mindir"]
    images = np.random.default_rng(0).normal(size=(1, 3, CROP, CROP)).astype(np.float32)
    expected = net(ms.Tensor(images)).asnumpy()
    exported = run_exported(out, images)
    assert exported.shape == (1, 3, CROP, CROP)
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(expected).max() > 1e-3  # a real, non-trivial output was compared


def test_training_checkpoint_names_are_accepted(tiny_checkpoint, tmp_path):
    net, _ = tiny_checkpoint
    ckpt = tmp_path / "train.ckpt"
    ms.save_checkpoint(TrainingWrapper(net), str(ckpt))
    assert any(name.startswith("network.") for name in ms.load_checkpoint(str(ckpt)))
    out = export_model(ExportOptions(config="tiny_synthetic", ckpt=ckpt, crop=CROP, out=tmp_path / "t.mindir",
                                     overrides=("decoder_output_stride=4", "seg_num_classes=3")))
    images = np.ones((1, 3, CROP, CROP), np.float32)
    np.testing.assert_allclose(run_exported(out, images), net(ms.Tensor(images)).asnumpy(), rtol=1e-4, atol=1e-4)


def test_existing_output_is_kept_without_force(tiny_checkpoint, tmp_path):
    _, ckpt = tiny_checkpoint
    out = tmp_path / "keep.mindir"
    out.write_text("precious")
    with pytest.raises(UsageError, match="already exists"):
        export_model(ExportOptions(config="tiny_synthetic", ckpt=ckpt, out=out))
    assert out.read_text() == "precious"


def export_cli(*args, cwd):
    return subprocess.run([*EXPORT, *args], capture_output=True, text=True, cwd=cwd, env=CHILD_ENV, timeout=120)


def assert_one_line_exit_2(result, *words):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0]


def test_cli_bad_checkpoints_exit_2_with_one_line(tiny_checkpoint, tmp_path):
    _, good = tiny_checkpoint
    assert_one_line_exit_2(export_cli("--config", "tiny_synthetic", "--ckpt", "missing.ckpt", cwd=tmp_path),
                           "missing.ckpt", "no such file")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(good.read_bytes()[:5000])
    assert_one_line_exit_2(export_cli("--config", "tiny_synthetic", "--ckpt", str(corrupt), cwd=tmp_path),
                           "corrupt.ckpt")
    # a checkpoint of the tiny model does not fit the ResNet-50 model
    assert_one_line_exit_2(export_cli("--config", "voc_r50_os16", "--ckpt", str(good), "--crop", "33",
                                      cwd=tmp_path), "tiny.ckpt")
    assert_one_line_exit_2(export_cli("--config", "tiny_synthetic", "--ckpt", str(good), "--set", "crop=9",
                                      cwd=tmp_path), "crop_size")
    assert list(tmp_path.iterdir()) == [corrupt]  # nothing half-written
