"""Sample predictions for report.html: a few validation images, what the best checkpoint makes of
them, and where it goes wrong.

The masks come from deeplab-infer, run as its own process (the launcher never imports MindSpore
or deeplab): the same predictor and the same scales and flip as the evaluation that scored the
images. Which images: deeplab-eval's eval.json scores every image by its own mIoU; the samples
are spread over that ranking from the worst up (the worst is always one), in a fixed order, so
two collections of one job show the same images. Each sample becomes one PNG in
``predictions/`` of the results directory, four panels side by side:
image | ground truth | prediction | errors (red: wrong, grey: right, cream: ignored),
in the VOC palette that deeplab-infer's masks carry.

With ``collect-results --predict N`` and no such eval.json (the job only evaluated during
training, or not at all), deeplab-eval is run first, as its own process too, on the job's
--config and --data-root with the checkpoint collect-results chose, at a single scale; its
eval.json goes into ``predictions/`` and counts as the job's evaluation.

Choosing samples is pure, and so is drawing a panel (launcher/collect/panels.py);
``make_predictions`` has the effects (reading
the images, the subprocess, writing PNGs). Whatever is missing or unreadable leaves the section
(or one sample) out with one line saying why; nothing here raises for bad input.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from launcher.collect.evalfile import EvalResult, ImageScore
from launcher.collect.gather import ManifestEntry
from launcher.collect.panels import IGNORE_INDEX, compose_panel, read_labels, read_mask

DEFAULT_SAMPLES = 6
PREDICTIONS_DIR = "predictions"
INFER_TIMEOUT_S = 1800.0


@dataclass
class Predictions:
    """summary.json's "predictions" and the files written (for the manifest)."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    entries: list[ManifestEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # one line per sample that could not be shown
    note: str | None = None  # why there are no samples at all
    checkpoint: str | None = None
    legend: list[dict[str, Any]] = field(default_factory=list)
    chosen_from: int = 0
    scales: list[float] = field(default_factory=list)
    flip: bool = False

    def to_summary(self) -> dict[str, Any]:
        return {"samples": self.samples, "skipped": self.skipped, "note": self.note, "checkpoint": self.checkpoint,
                "legend": self.legend, "chosen_from": self.chosen_from, "scales": self.scales, "flip": self.flip}


def left_out(why: str) -> Predictions:
    return Predictions(note=f"Sample predictions left out: {why}.")


def choose_samples(scores: Sequence[ImageScore], count: int) -> list[ImageScore]:
    """``count`` images spread evenly over the ranking by mIoU, worst first (ties by name)."""
    ranked = sorted((s for s in scores if s.miou is not None), key=lambda s: (s.miou, s.name))
    if count <= 0 or not ranked:
        return []
    if count >= len(ranked):
        return ranked
    if count == 1:
        return ranked[:1]
    positions = sorted({round(i * (len(ranked) - 1) / (count - 1)) for i in range(count)})
    return [ranked[p] for p in positions]


def _readable_image(path: str | None) -> str | None:
    """Why this image cannot be shown, or None. Only absolute paths of regular files that decode."""
    from PIL import Image

    if not path or not os.path.isabs(path):
        return "no image file recorded (MindRecord data, or a relative path)"
    if not os.path.isfile(path):
        return f"{path}: no such file"
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as err:  # Pillow raises many types for a file that does not decode
        return f"{path}: cannot be read as an image ({type(err).__name__})"
    return None


def infer_command(result: EvalResult, checkpoint: Path, images: Sequence[str], out_dir: Path,
                  python: str = sys.executable) -> list[str]:
    """deeplab-infer with the evaluation's config, overrides, scales and flip (values joined with '='
    so none can be read as an option)."""
    command = [python, "-m", "deeplab.infer", f"--config={result.config}", f"--ckpt={checkpoint}", f"--out={out_dir}",
               "--pynative"]  # a few images: no graph compile (deeplab-infer's advice)
    command += [f"--set={override}" for override in result.overrides]
    if result.scales:
        command += ["--scales", *(repr(float(scale)) for scale in result.scales)]
    command += ["--flip" if result.flip else "--no-flip", "--", *images]
    return command


def training_data_args(args: Sequence[str]) -> tuple[str | None, str | None, list[str]]:
    """The --config, --data-root and --set values of deeplab-train's arguments (the last of each wins)."""
    config = data_root = None
    overrides: list[str] = []
    for index, arg in enumerate(args):
        following = args[index + 1] if index + 1 < len(args) else None
        for flag in ("--config", "--data-root", "--set"):
            value = arg[len(flag) + 1:] if arg.startswith(flag + "=") else following if arg == flag else None
            if value is None:
                continue
            if flag == "--config":
                config = value
            elif flag == "--data-root":
                data_root = value
            else:
                overrides.append(value)
    return config, data_root, overrides


EVAL_FOR_SAMPLES = f"{PREDICTIONS_DIR}/eval.json"


def evaluate_for_samples(stage: Path, job_args: Sequence[str], checkpoint: str | None,
                         python: str = sys.executable, announce: Callable[[str], None] = lambda line: None
                         ) -> tuple[str | None, str | None]:
    """Run deeplab-eval (single scale) on the job's validation data into ``stage/predictions/eval.json``.

    Returns (that results path, None), or (None, why not) when the job's arguments do not say
    where its data is, the checkpoint was not collected or deeplab-eval fails.
    """
    config, data_root, overrides = training_data_args(job_args)
    if not config or not data_root:
        return None, "no evaluation ran, and the job's arguments name no --config and --data-root to run one"
    if not os.path.isabs(data_root):
        return None, f"no evaluation ran, and the job's --data-root {data_root} is not an absolute path"
    if checkpoint is None or not (stage / checkpoint).is_file():
        return None, "no evaluation ran, and no checkpoint was collected to run one"
    (stage / PREDICTIONS_DIR).mkdir(exist_ok=True)
    command = [python, "-m", "deeplab.eval", f"--config={config}", f"--data-root={data_root}",
               f"--ckpt={stage / checkpoint}", "--scales", "1.0", "--no-flip", f"--output={stage / EVAL_FOR_SAMPLES}",
               *(f"--set={override}" for override in overrides)]
    why_not = None
    announce(f"sample predictions: deeplab-eval of {checkpoint} on {data_root} first (no evaluation was collected)")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INFER_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0 or not (stage / EVAL_FOR_SAMPLES).is_file():
            why_not = f"deeplab-eval failed (exit {done.returncode}): {_last_error_line(done.stderr)}"
    except subprocess.TimeoutExpired:
        why_not = f"deeplab-eval took longer than {INFER_TIMEOUT_S:.0f} s"
    except OSError as err:
        why_not = f"deeplab-eval could not start ({err.strerror or err})"
    if why_not is not None:
        (stage / EVAL_FOR_SAMPLES).unlink(missing_ok=True)
        (stage / PREDICTIONS_DIR).rmdir()
        return None, why_not
    return EVAL_FOR_SAMPLES, None


def generated_entry(stage: Path, relative: str, source: str) -> ManifestEntry:
    data = (stage / relative).read_bytes()
    return ManifestEntry(relative, source, "generated", len(data), hashlib.sha256(data).hexdigest())


def _last_error_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("[WARNING]")]
    return lines[-1][:300] if lines else "no message"


def _safe_name(index: int, name: str) -> str:
    return f"{index:02d}-{re.sub(r'[^A-Za-z0-9._-]', '_', name)[:80]}.png"


def make_predictions(stage: Path, result: EvalResult | None, eval_source: str | None, checkpoint: str | None,
                     count: int, class_names: Sequence[str], python: str = sys.executable,
                     announce: Callable[[str], None] = lambda line: None) -> Predictions:
    """Write the sample panels into ``stage/predictions/``; the summary entry says what was shown or why not."""
    if count <= 0:
        return left_out("turned off (--predict 0)")
    if result is None:
        return left_out("no evaluation ran (deeplab-eval ... --output LOG0/eval.json)")
    if not result.per_image:
        return left_out(f"{eval_source} has no per-image scores (written by deeplab-eval --output)")
    if not result.config:
        return left_out(f"{eval_source} does not name its config")
    if checkpoint is None or not (stage / checkpoint).is_file():
        return left_out("the evaluated checkpoint was not collected (collected without --no-checkpoints?)")
    chosen = choose_samples(result.per_image, count)
    if not chosen:
        return left_out(f"{eval_source} scores no image")
    skipped = []
    usable = []
    for sample in chosen:
        problem = _readable_image(sample.image) or (None if sample.label and os.path.isfile(sample.label)
                                                    else f"{sample.label}: no ground-truth file")
        if problem:
            skipped.append(f"{sample.name}: {problem}")
        else:
            usable.append(sample)
    if not usable:
        return Predictions(note="Sample predictions left out: no chosen image could be read.", skipped=skipped)
    stems = [Path(s.image).stem for s in usable]
    if len(set(stems)) != len(stems):
        return Predictions(note="Sample predictions left out: two chosen images share a file name.", skipped=skipped)
    with tempfile.TemporaryDirectory(prefix=".predict-", dir=stage.parent) as scratch:
        command = infer_command(result, stage / checkpoint, [s.image for s in usable], Path(scratch) / "masks", python)
        announce(f"sample predictions: deeplab-infer on {len(usable)} image(s) with {checkpoint}")
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=INFER_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return left_out(f"deeplab-infer took longer than {INFER_TIMEOUT_S:.0f} s")
        except OSError as err:
            return left_out(f"deeplab-infer could not start ({err.strerror or err})")
        if done.returncode != 0:
            return left_out(f"deeplab-infer failed (exit {done.returncode}): {_last_error_line(done.stderr)}")
        return _compose_all(stage, usable, Path(scratch) / "masks", checkpoint, result, class_names, skipped)


def _compose_all(stage: Path, usable: list[ImageScore], masks: Path, checkpoint: str, result: EvalResult,
                 class_names: Sequence[str], skipped: list[str]) -> Predictions:
    from PIL import Image

    out = stage / PREDICTIONS_DIR
    worst = choose_samples(result.per_image, 1)[0].name  # of all images, not only of those drawn
    shown = Predictions(checkpoint=checkpoint, chosen_from=len(result.per_image), scales=list(result.scales),
                        flip=result.flip, skipped=skipped)
    present: set[int] = set()
    palette = None
    for index, sample in enumerate(usable):
        try:
            prediction, palette = read_mask(masks / f"{Path(sample.image).stem}.png")
            with Image.open(sample.image) as image:
                image_rgb = np.asarray(image.convert("RGB"))
            label = read_labels(Path(sample.label), palette)
            panel = compose_panel(image_rgb, label, prediction, palette)
        except (OSError, ValueError) as err:  # Pillow's UnidentifiedImageError is an OSError
            skipped.append(f"{sample.name}: {err}")
            continue
        present |= set(np.unique(label).tolist()) | set(np.unique(prediction).tolist())
        buffer = io.BytesIO()
        Image.fromarray(panel).save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
        relative = f"{PREDICTIONS_DIR}/{_safe_name(index, sample.name)}"
        out.mkdir(exist_ok=True)
        (stage / relative).write_bytes(data)  # the staging dir appears whole, under its final name, or not at all
        shown.entries.append(ManifestEntry(relative, f"deeplab-infer {checkpoint} {sample.image}", "generated",
                                           len(data), hashlib.sha256(data).hexdigest()))
        shown.samples.append({"name": sample.name, "mIoU": sample.miou, "worst": sample.name == worst,
                              "path": relative, "image": sample.image, "label": sample.label})
    if not shown.samples:
        shown.note = "Sample predictions left out: no chosen image could be drawn."
        return shown
    shown.legend = [{"index": i, "name": class_names[i] if i < len(class_names) else f"class {i}",
                     "rgb": [int(c) for c in palette[i]]} for i in sorted(present) if i != IGNORE_INDEX]
    return shown
