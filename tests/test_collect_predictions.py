"""Sample predictions in report.html, end to end: the session's real 2-rank CPU job, evaluated with
deeplab-eval on its deeplab-best.ckpt (real MindSpore), collected (deeplab-infer runs as a
subprocess), and the report opened in a real headless Chromium (Debian's package)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launcher.collect import CollectRequest, collect
from launcher.collect.evalfile import ImageScore
from launcher.collect.panels import PANEL_HEIGHT, VOID_RGB, WRONG_RGB, compose_panel
from launcher.collect.predictions import choose_samples
from tests.fixtures.collect_jobs import sha256_of

FAST = ["--set", "threads=1", "--set", "num_parallel_workers=1"]
WINDOW = (1200, 7000)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "OMPI_", "RANK_"))}


@pytest.fixture(scope="module")
def evaluated_job(two_rank_cpu_job: Path, synthetic_voc: Path, tmp_path_factory) -> Path:
    """A copy of the session's job with LOG0/eval.json from deeplab-eval of its best checkpoint."""
    job_dir = tmp_path_factory.mktemp("evaluated") / "job"
    shutil.copytree(two_rank_cpu_job, job_dir, symlinks=True)
    best = job_dir / "LOG0" / "ckpt" / "deeplab-best.ckpt"
    assert best.is_file()
    done = subprocess.run([sys.executable, "-m", "deeplab.eval", "--config", "tiny_synthetic", "--data-root",
                           str(synthetic_voc), "--ckpt", str(best), "--scales", "1.0", "--no-flip",
                           "--output", str(job_dir / "LOG0" / "eval.json"), *FAST],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert done.returncode == 0, done.stderr  # deeplab-best.ckpt loads (its deeplab_miou entry is not a weight)
    return job_dir


@pytest.fixture(scope="module")
def with_predictions(evaluated_job: Path, tmp_path_factory):
    return collect(CollectRequest(job_dir=evaluated_job, results_root=tmp_path_factory.mktemp("results"),
                                  hash_cache=None, predict=3))


pytestmark = pytest.mark.slow  # the session's real MindSpore job, deeplab-eval and deeplab-infer


def test_three_samples_from_the_best_checkpoint_including_the_worst(evaluated_job, with_predictions):
    eval_doc = json.loads((evaluated_job / "LOG0" / "eval.json").read_text())
    predictions = with_predictions.summary["predictions"]
    assert predictions["note"] is None and predictions["skipped"] == []
    assert predictions["checkpoint"] == "LOG0/ckpt/deeplab-best.ckpt"
    assert (predictions["scales"], predictions["flip"]) == ([1.0], False)
    ranked = sorted(eval_doc["per_image"], key=lambda e: (e["mIoU"], e["name"]))
    assert len(ranked) == 8  # the synthetic val split: 3 samples are the worst, the 5th and the best
    assert [s["name"] for s in predictions["samples"]] == [ranked[0]["name"], ranked[4]["name"], ranked[7]["name"]]
    assert [s["worst"] for s in predictions["samples"]] == [True, False, False]
    manifest = {e["path"]: e for e in json.loads((with_predictions.results_dir / "manifest.json").read_text())["files"]}
    html = with_predictions.report.read_text()
    for sample in predictions["samples"]:
        path = with_predictions.results_dir / sample["path"]
        assert manifest[sample["path"]]["method"] == "generated"
        assert manifest[sample["path"]]["sha256"] == sha256_of(path)
        assert f'src="{sample["path"]}"' in html
        panel = np.asarray(Image.open(path).convert("RGB"))
        image = np.asarray(Image.open(sample["image"]))
        assert panel.shape[0] == PANEL_HEIGHT
        assert panel.shape[1] == pytest.approx(4 * image.shape[1] * PANEL_HEIGHT / image.shape[0] + 12, abs=4)
        # The ground-truth panel shows the label file's classes in the VOC colours.
        label = np.asarray(Image.open(sample["label"]))
        palette = np.asarray(Image.open(sample["label"]).getpalette()[:768], np.uint8).reshape(-1, 3)
        width = round(image.shape[1] * PANEL_HEIGHT / image.shape[0])
        truth_colours = {tuple(c) for c in panel[:, width + 4: 2 * width + 4].reshape(-1, 3)}
        assert {tuple(palette[i]) for i in np.unique(label)} <= truth_colours
    assert {entry["name"] for entry in predictions["legend"]} >= {"background"}
    assert with_predictions.summary["files"] == len(manifest)


def test_an_unreadable_image_and_a_missing_checkpoint_leave_a_line_not_a_traceback(evaluated_job, tmp_path):
    job_dir = tmp_path / "job"
    shutil.copytree(evaluated_job, job_dir, symlinks=True)
    eval_path = job_dir / "LOG0" / "eval.json"
    doc = json.loads(eval_path.read_text())
    worst = min(doc["per_image"], key=lambda e: (e["mIoU"], e["name"]))
    broken = tmp_path / f"{worst['name']}.jpg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    worst["image"] = str(broken)
    eval_path.write_text(json.dumps(doc))
    outcome = collect(CollectRequest(job_dir=job_dir, results_root=tmp_path / "r1", hash_cache=None, predict=2))
    predictions = outcome.summary["predictions"]
    assert predictions["skipped"] == [f"{worst['name']}: {broken}: cannot be read as an image (UnidentifiedImageError)"]
    assert len(predictions["samples"]) == 1 and predictions["samples"][0]["name"] != worst["name"]
    assert "cannot be read as an image" in outcome.report.read_text()

    outcome = collect(CollectRequest(job_dir=job_dir, results_root=tmp_path / "r2", hash_cache=None,
                                     include_checkpoints=False))
    html = outcome.report.read_text()
    assert outcome.summary["predictions"]["samples"] == []
    assert "Sample predictions left out: the evaluated checkpoint was not collected" in html
    assert not (outcome.results_dir / "predictions").exists()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_report_renders_in_a_real_browser_without_a_network(with_predictions, tmp_path):
    browser = chromium()
    if browser is None:
        if os.geteuid() == 0:
            pytest.fail("chromium is missing: `make system-deps` installs it (Debian package chromium)")
        pytest.skip("chromium is not installed (Debian package chromium; `make system-deps` as root)")
    shot = tmp_path / "report.png"
    # No name resolves: anything the report fetched from a network would be missing from the picture.
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--force-device-scale-factor=1", f"--user-data-dir={tmp_path / 'profile'}",
                           "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                           f"--screenshot={shot}", with_predictions.report.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    colours = {tuple(c) for c in pixels[::2, ::2].reshape(-1, 3)}
    assert len(colours) > 500  # text, plots and photos, not a blank or error page
    # Colours only the prediction PNGs (separate files next to report.html) contain: the error panels'
    # red and the ignored region's cream. Present, so the browser loaded them by their relative paths.
    count = lambda rgb: int(np.all(pixels == np.array(rgb, np.uint8), axis=2).sum())  # noqa: E731
    assert count(WRONG_RGB) > 500 and count(VOID_RGB) > 500
    # The confusion matrix's darkest blue and the timeline's green bars, drawn inline (data: URIs).
    blues = (pixels[:, :, 2] > 80) & (pixels[:, :, 0] < 40) & (pixels[:, :, 1] < 80)
    assert int(blues.sum()) > 100
    assert count((0x4C, 0xAF, 0x50)) > 1000


def test_choose_samples_spreads_over_the_ranking_from_the_worst():
    scores = [ImageScore(f"img{i}", miou, None, None) for i, miou in enumerate([0.5, 0.1, 0.9, 0.3, 0.7, None])]
    assert [s.name for s in choose_samples(scores, 3)] == ["img1", "img0", "img2"]
    assert [s.name for s in choose_samples(scores, 1)] == ["img1"]
    assert [s.name for s in choose_samples(scores, 10)] == ["img1", "img3", "img0", "img4", "img2"]
    assert choose_samples(scores, 0) == [] and choose_samples([], 3) == []


def test_the_errors_panel_marks_wrong_pixels_red_and_ignored_ones_cream():
    image = np.full((4, 6, 3), 100, np.uint8)
    label = np.array([[0] * 6, [1] * 6, [255] * 6, [1] * 6], np.int64)
    prediction = np.array([[0] * 6, [2] * 6, [2] * 6, [1] * 6], np.int64)
    palette = np.zeros((256, 3), np.uint8)
    palette[1], palette[2] = (128, 0, 0), (0, 128, 0)
    panel = compose_panel(image, label, prediction, palette, height=4)
    assert panel.shape == (4, 4 * 6 + 3 * 4, 3)
    errors = panel[:, 3 * (6 + 4):]
    assert tuple(errors[1, 0]) == WRONG_RGB and tuple(errors[2, 0]) == VOID_RGB
    assert tuple(errors[0, 0]) == tuple(errors[3, 0]) != WRONG_RGB
    assert tuple(panel[1, 6 + 4]) == (128, 0, 0) and tuple(panel[1, 2 * (6 + 4)]) == (0, 128, 0)
    with pytest.raises(ValueError, match="sizes differ"):
        compose_panel(image, label[:3], prediction, palette)


def test_predict_n_without_an_evaluation_runs_deeplab_eval_first(two_rank_cpu_job, tmp_path):
    assert not (two_rank_cpu_job / "LOG0" / "eval.json").exists()  # only the evaluation during training ran
    plain = collect(CollectRequest(job_dir=two_rank_cpu_job, results_root=tmp_path / "plain", hash_cache=None))
    assert plain.summary["predictions"]["samples"] == [] and not (plain.results_dir / "predictions").exists()

    outcome = collect(CollectRequest(job_dir=two_rank_cpu_job, results_root=tmp_path / "asked", hash_cache=None,
                                     predict=2))
    evaluation = outcome.summary["evaluation"]
    assert evaluation["source"] == "predictions/eval.json" and evaluation["scales"] == [1.0]
    assert len(evaluation["confusion_matrix"]) == 21 and evaluation["num_images"] == 8
    predictions = outcome.summary["predictions"]
    assert predictions["checkpoint"] == "LOG0/ckpt/deeplab-best.ckpt" and len(predictions["samples"]) == 2
    manifest = {e["path"]: e for e in json.loads((outcome.results_dir / "manifest.json").read_text())["files"]}
    assert manifest["predictions/eval.json"]["method"] == "generated"
    assert manifest["predictions/eval.json"]["sha256"] == sha256_of(outcome.results_dir / "predictions" / "eval.json")
    html = outcome.report.read_text()
    assert 'alt="Confusion matrix (rows: ground truth, normalised; %)"' in html
    assert all(f'src="{s["path"]}"' in html for s in predictions["samples"])
