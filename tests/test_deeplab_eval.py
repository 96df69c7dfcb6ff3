"""deeplab-eval and deeplab-infer as real processes on a briefly trained tiny_synthetic model (the
session's real two-rank job), plus the multi-scale/flip prediction plumbing with a fake network (no MindSpore)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deeplab.data.voc import CLASS_NAMES
from deeplab.predict import MultiScalePredictor, PredictSettings, preprocess, restore_probabilities, scaled_crop

RUN_TIMEOUT = 240
FAST = ["--set", "threads=1", "--set", "num_parallel_workers=1"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "OMPI_", "RANK_"))}


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, env=_env())


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[WARNING]")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def trained_ckpt(two_rank_cpu_job: Path) -> Path:
    """The last step checkpoint of the session's real training (read only: the tests write elsewhere)."""
    from tests.fixtures.jobs import TRAIN_STEPS

    path = two_rank_cpu_job / "LOG0" / "ckpt" / f"deeplab-step{TRAIN_STEPS:06d}.ckpt"
    assert path.is_file(), sorted(p.name for p in path.parent.iterdir())
    return path


@pytest.mark.slow
def test_eval_prints_the_table_and_miou_line_and_writes_eval_json(synthetic_voc, trained_ckpt, tmp_path):
    output = tmp_path / "eval.json"
    proc = _run("deeplab.eval", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
                "--ckpt", str(trained_ckpt), "--scales", "1.0", "--no-flip", "--output", str(output), *FAST)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"mIoU = [01]\.\d{5}", lines[-1]), lines[-1]
    table = {line.split()[0]: line.split()[1] for line in lines if line.split() and line.split()[0] in CLASS_NAMES}
    assert list(table) == list(CLASS_NAMES)
    report = json.loads(output.read_text())
    assert set(report) == {"mIoU", "per_class_iou", "ckpt", "scales", "flip", "num_images", "config", "overrides",
                           "data_root", "split", "confusion_matrix", "per_image"}
    assert report["num_images"] == 8 and report["scales"] == [1.0] and report["flip"] is False
    assert report["config"] == "tiny_synthetic" and report["split"] == "val"
    assert report["data_root"] == str(synthetic_voc.resolve()) and report["overrides"] == FAST[1::2]
    # The confusion matrix is the histogram the mIoU came from: its IoU is the reported one.
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (21, 21) and matrix.sum() > 0
    tp = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - tp
    for index, name in enumerate(CLASS_NAMES):
        expected = report["per_class_iou"][name]
        assert (union[index] == 0) if expected is None else tp[index] / union[index] == pytest.approx(expected)
    # One score per validation image, in list order, with its files.
    names = (synthetic_voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    assert [entry["name"] for entry in report["per_image"]] == names
    for entry in report["per_image"]:
        assert 0.0 <= entry["mIoU"] <= 1.0
        assert Path(entry["image"]) == (synthetic_voc / "JPEGImages" / f"{entry['name']}.jpg").resolve()
        assert Path(entry["label"]) == (synthetic_voc / "SegmentationClass" / f"{entry['name']}.png").resolve()
    assert report["ckpt"] == str(trained_ckpt.resolve())
    assert f"{report['mIoU']:.5f}" == lines[-1].split()[-1]
    present = [v for v in report["per_class_iou"].values() if v is not None]
    assert report["mIoU"] == pytest.approx(sum(present) / len(present))
    assert all(0.0 <= v <= 1.0 for v in present)
    for name, value in report["per_class_iou"].items():
        assert table[name] == ("n/a" if value is None else f"{value:.5f}")

    again = _run("deeplab.eval", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
                 "--ckpt", str(trained_ckpt), "--output", str(output), *FAST)
    assert_one_line_error(again, str(output), "--force")


@pytest.mark.slow
def test_eval_multi_scale_with_flip(synthetic_voc, trained_ckpt, tmp_path):
    output = tmp_path / "ms.json"
    proc = _run("deeplab.eval", "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
                "--ckpt", str(trained_ckpt), "--scales", "0.75", "1.25", "--flip", "--output", str(output), *FAST)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(output.read_text())
    assert report["scales"] == [0.75, 1.25] and report["flip"] is True
    assert 0.0 <= report["mIoU"] <= 1.0


@pytest.mark.slow
def test_infer_writes_palette_masks_and_overlays(synthetic_voc, trained_ckpt, tmp_path):
    images = sorted((synthetic_voc / "JPEGImages").glob("val_*.jpg"))[:2]
    out = tmp_path / "out"
    proc = _run("deeplab.infer", "--config", "tiny_synthetic", "--ckpt", str(trained_ckpt),
                *map(str, images), "--out", str(out), *FAST)
    assert proc.returncode == 0, proc.stderr
    for image_path in images:
        image = cv2.imread(str(image_path))
        with Image.open(out / f"{image_path.stem}.png") as mask:
            assert mask.mode == "P" and mask.size == (image.shape[1], image.shape[0])
            values = np.array(mask)
        assert values.max() < len(CLASS_NAMES)
        overlay = cv2.imread(str(out / f"{image_path.stem}_overlay.jpg"))
        assert overlay.shape == image.shape
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{p.stem}.png" for p in images] + [f"{p.stem}_overlay.jpg" for p in images])

    again = _run("deeplab.infer", "--config", "tiny_synthetic", "--ckpt", str(trained_ckpt),
                 str(images[0]), "--out", str(out), *FAST)
    assert_one_line_error(again, "exists", "--force")


@pytest.mark.slow
def test_eval_bad_checkpoints_give_one_line(synthetic_voc, trained_ckpt, tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    data = trained_ckpt.read_bytes()
    corrupt.write_bytes(data[: len(data) // 3])
    base = ["--config", "tiny_synthetic", "--data-root", str(synthetic_voc), *FAST]
    assert_one_line_error(_run("deeplab.eval", *base, "--ckpt", str(corrupt)), str(corrupt))
    assert_one_line_error(_run("deeplab.eval", *base, "--ckpt", str(tmp_path / "none.ckpt")), "none.ckpt")
    other_model = _run("deeplab.eval", *base, "--ckpt", str(trained_ckpt), "--set", "aspp_channels=32")
    assert_one_line_error(other_model, str(trained_ckpt))


# ---------------------------------------------------------------- prediction plumbing (pure)

def test_preprocess_resizes_the_long_side_and_pads_with_the_mean():
    image = np.full((20, 40, 3), 100, dtype=np.uint8)
    chw, valid = preprocess(image, 33, mean=(100, 100, 100), std=(2, 2, 2))
    assert chw.shape == (3, 33, 33) and valid == (16, 33)
    assert np.all(chw == 0)  # the mean normalises to 0 and the padding is 0
    assert scaled_crop(513, 0.5) == 257 and scaled_crop(97, 1.0) == 97


def test_restore_probabilities_crops_the_valid_region_and_resizes_back():
    probs = np.zeros((2, 8, 8), dtype=np.float32)
    probs[1, :4, :8] = 1.0  # valid region is the top 4 rows
    restored = restore_probabilities(probs, (4, 8), (10, 20))
    assert restored.shape == (10, 20, 2)
    assert np.allclose(restored[:, :, 1], 1.0)


def _brightness_network(batch: np.ndarray) -> np.ndarray:
    """Fake network: class 1 where the (normalised) first channel is positive, else class 0."""
    positive = (batch[:, :1] > 0).astype(np.float32)
    return np.concatenate([1.0 - positive, positive], axis=1)


@pytest.mark.parametrize("scales, flip", [((1.0,), False), ((0.5, 1.0, 1.75), True)])
def test_multi_scale_flip_prediction_maps_back_to_the_original_pixels(scales, flip):
    image = np.zeros((30, 50, 3), dtype=np.uint8)
    image[:, :20] = 200  # left 20 columns bright -> class 1
    settings = PredictSettings(crop_size=41, scales=scales, flip=flip, mean=(100.0,) * 3, std=(1.0,) * 3,
                               batch_size=2)
    calls = []

    def network(batch):
        calls.append(batch.shape)
        return _brightness_network(batch)

    predictor = MultiScalePredictor(network, settings)
    masks = predictor.predict([image, image[:, ::-1]])
    expected = np.zeros((30, 50), dtype=np.uint8)
    expected[:, :20] = 1
    for mask, want in zip(masks, [expected, expected[:, ::-1]]):
        assert mask.shape == (30, 50)
        # Away from the edge (resize blur) every pixel is right.
        assert np.array_equal(mask[:, :17], want[:, :17]) and np.array_equal(mask[:, 23:], want[:, 23:])
    assert len(calls) == len(scales) * (2 if flip else 1)
    assert all(shape[0] == 2 for shape in calls)
    probs = predictor.probabilities([image])[0]
    assert math.isclose(float(probs.sum(axis=2).mean()), len(scales) * (2 if flip else 1), rel_tol=1e-4)
