"""Checkpoints as the tools receive them: the best checkpoint training writes, and the hostile ones.

deeplab-eval/-infer/-export load LOG0/ckpt/deeplab-best.ckpt (mIoU stored beside the weights);
weights that are not floating point or not finite, dtypes numpy cannot hold, paths that are not
files, and files larger than memory each get one accurate line (or, for size, just work).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deeplab.convert.errors import ConversionError
from deeplab.convert.fit import fit
from deeplab.convert.layout import Mapped
from tests.fixtures.processes import run_at_once

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 300
FAST = ["--set", "threads=1", "--set", "num_parallel_workers=1"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "OMPI_", "RANK_", "LAUNCH_TRAIN_"))}


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          env=_env(), cwd=cwd)


def in_mindspore(code: str, *args: object) -> str:
    """Run code with MindSpore in a process of its own (a runtime started here would refuse the
    set_device() of later tests in this pytest process); its stdout."""
    prelude = "import sys; import numpy as np; import mindspore as ms; ms.set_device('CPU'); "
    done = subprocess.run([sys.executable, "-c", prelude + code, *map(str, args)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[WARNING]")]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def safetensors_with_dtype(path: Path, dtype: str, itemsize: int) -> Path:
    header = json.dumps({"backbone.conv1.weight": {"dtype": dtype, "shape": [2], "data_offsets": [0, 2 * itemsize]}})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"\0" * (2 * itemsize))
    return path


@pytest.mark.slow
def test_the_best_checkpoint_training_writes_loads_in_eval_infer_and_export(synthetic_voc, tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    # tiny_synthetic evaluates at the end of training and keeps deeplab-best.ckpt with its mIoU inside.
    train = _run("deeplab.train", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
                 "--ckpt-dir", str(ckpt_dir), "--train-steps", "2", "--set", "batch_size=4", *FAST)
    assert train.returncode == 0, train.stderr
    best = ckpt_dir / "deeplab-best.ckpt"
    assert best.is_file(), sorted(p.name for p in ckpt_dir.iterdir())

    # One MindSpore process reads it (its mIoU entry is what the tools once refused) and writes the
    # diverged copy used below: a run whose weights went NaN.
    diverged = tmp_path / "diverged.ckpt"
    names, nan_weight = in_mindspore(
        "params = ms.load_checkpoint(sys.argv[1]); "
        "print(' '.join(params)); "
        "name = next(n for n in params if n.endswith('conv1.weight')); "
        "entries = [{'name': n, 'data': p.asnumpy()} for n, p in params.items()]; "
        "[e.update(data=np.full(e['data'].shape, np.nan, np.float32)) for e in entries if e['name'] == name]; "
        "ms.save_checkpoint([{'name': e['name'], 'data': ms.Tensor(e['data'])} for e in entries], sys.argv[2]); "
        "print(name)", best, diverged).strip().splitlines()
    assert "deeplab_miou" in names.split()
    # The three tools read the same file and write their own (one thread each): they run at once.
    image = next((synthetic_voc / "JPEGImages").iterdir())
    evaluated, inferred, exported = run_at_once([
        [sys.executable, "-m", "deeplab.eval", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
         "--ckpt", str(best), "--scales", "1.0", "--no-flip", *FAST, "--output", str(tmp_path / "eval.json")],
        [sys.executable, "-m", "deeplab.infer", "--config", "tiny_synthetic", "--ckpt", str(best), str(image),
         "--out", str(tmp_path / "masks"), "--scales", "1.0", "--no-flip", *FAST],
        [sys.executable, "-m", "deeplab.export", "--config", "tiny_synthetic", "--ckpt", str(best), "--crop", "49",
         "--out", str(tmp_path / "best.mindir"), *FAST],
    ], env=_env(), timeout=RUN_TIMEOUT)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "mIoU = " in evaluated.stdout
    assert inferred.returncode == 0, inferred.stderr
    assert any((tmp_path / "masks").iterdir())
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "best.mindir").stat().st_size > 0

    # A diverged run's weights (NaN) evaluate to a normal-looking mIoU unless refused: one line.
    refused = _run("deeplab.eval", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
                   "--ckpt", str(diverged), *FAST)
    assert "NaN or infinite" in one_error_line(refused) and nan_weight in one_error_line(refused)

    # and a BF16 safetensors file given to deeplab-eval is one line, not a traceback
    bf16 = safetensors_with_dtype(tmp_path / "bf16.safetensors", "BF16", 2)
    refused = _run("deeplab.eval", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
                   "--ckpt", str(bf16), *FAST)
    assert "is BF16, which cannot be read here" in one_error_line(refused)


def _mapped(value: np.ndarray) -> Mapped:
    return Mapped(layout="deeplab", weights={"w": value}, source_names={"w": "network.w"})


@pytest.mark.parametrize("value, message", [
    (np.full((2, 3), np.nan, np.float32), r"network\.w holds 6 NaN or infinite value\(s\) of 6"),
    (np.array([1.0, np.inf], np.float32), r"network\.w holds 1 NaN or infinite"),
    (np.ones((2, 3), np.int32), r"network\.w is int32; model weights must be floating point"),
])
def test_weights_that_are_not_finite_floats_are_refused(value, message):
    with pytest.raises(ConversionError, match=message):
        fit(_mapped(value), {"w": value.shape})
    fine = fit(_mapped(np.ones(value.shape, np.float32)), {"w": value.shape})
    assert set(fine.weights) == {"w"}


def _convert(source: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return _run("deeplab.convert.cli", "--config", "tiny_synthetic", str(source), str(tmp_path / "out.ckpt"))


@pytest.mark.parametrize("dtype, size", [("BF16", 2), ("F8_E4M3", 1)])
def test_convert_refuses_bf16_and_f8_safetensors_in_one_line(tmp_path, dtype, size):
    source = safetensors_with_dtype(tmp_path / "w.safetensors", dtype, size)
    line = one_error_line(_convert(source, tmp_path))
    assert f"is {dtype}, which cannot be read here" in line and "w.safetensors" in line
    assert not (tmp_path / "out.ckpt").exists()


def test_a_directory_fifo_or_symlink_loop_as_checkpoint_says_what_it_is(tmp_path):
    (tmp_path / "dir.ckpt").mkdir()
    os.mkfifo(tmp_path / "fifo.ckpt")
    (tmp_path / "loop.ckpt").symlink_to(tmp_path / "loop.ckpt")
    expected = {"dir.ckpt": "is a directory", "fifo.ckpt": "is a FIFO, not a regular file",
                "loop.ckpt": "a loop of symbolic links", "missing.ckpt": "no such file"}
    for name, message in expected.items():
        line = one_error_line(_convert(tmp_path / name, tmp_path))
        assert name in line and message in line, line
    export = _run("deeplab.export", "--config", "tiny_synthetic", "--ckpt", str(tmp_path / "fifo.ckpt"),
                  "--out", str(tmp_path / "x.mindir"))
    assert "is a FIFO" in one_error_line(export)


def test_the_crc_of_a_checkpoint_larger_than_the_memory_allowed_is_checked_in_chunks(tmp_path):
    # A 1.5 GB sparse file with a valid MindSpore CRC trailer, checked by a process that may use
    # at most ~700 MB of address space: reading it whole would be a MemoryError.
    import binascii

    big = tmp_path / "big.ckpt"
    size = 1536 << 20
    with open(big, "wb") as handle:
        handle.truncate(size)
        crc = 0
        zeros = bytes(1 << 24)
        for _ in range(size // len(zeros)):
            crc = binascii.crc32(zeros, crc)
        handle.seek(size)
        handle.write(b"crc_num" + crc.to_bytes(10, "big"))
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (700 << 20, 700 << 20)); "
            "from deeplab.checkpoints import verify_crc; print(verify_crc(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-500:]


def test_a_bfloat16_mindspore_checkpoint_is_read_as_the_same_float32_values(tmp_path):
    path = tmp_path / "bf16.ckpt"
    read = in_mindspore(
        "values = np.array([[1.5, -2.25], [256.0, 0.0078125]], np.float32); "  # all exact in bfloat16
        "ms.save_checkpoint([{'name': 'backbone.conv1.weight', 'data': ms.Tensor(values).astype(ms.bfloat16)}], "
        "sys.argv[1]); "
        "from deeplab.convert.sources import read_weights; "
        "read = read_weights(sys.argv[1])['backbone.conv1.weight']; "
        "print(read.dtype, read.tolist() == values.tolist())", path)
    assert read.split() == ["float32", "True"]
