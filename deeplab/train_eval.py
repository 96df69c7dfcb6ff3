"""Evaluation during training: single-scale validation mIoU on rank 0, and when to run it.

Fast on purpose: one scale (``train_eval_scale``), no flip, the network being trained
(its graph in inference mode, compiled once) -- the full multi-scale + flip evaluation stays
with deeplab-eval. The result line keeps the project's ``mIoU = X`` format so collect-results
reads the curve:

    eval at step 370 (epoch 10, 'val', 60 images, scale 1.5, 2.1 s): mIoU = 0.81234

Importing this module does not import MindSpore; :class:`TrainingEvaluator` does.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np


def format_eval_line(step: int, epoch: int, split: str, images: int, scale: float, seconds: float,
                     miou: float) -> str:
    return (f"eval at step {step} (epoch {epoch}, {split!r}, {images} images, scale {scale:g}, {seconds:.1f} s): "
            f"mIoU = {miou:.5f}")


def eval_due(epoch: int, step: int, epoch_ends: bool, total_steps: int, every_epochs: int) -> bool:
    """Evaluate at the end of every ``every_epochs``-th epoch and after the final step (0: never)."""
    if every_epochs <= 0:
        return False
    return step == total_steps or (epoch_ends and epoch % every_epochs == 0)


def is_better(miou: float, best: float | None) -> bool:
    return not math.isnan(miou) and (best is None or miou > best)


class TrainingEvaluator:
    """mIoU of the network being trained on one split, at one scale."""

    def __init__(self, cfg: Any, network, data_root: Path, split: str) -> None:
        import mindspore as ms

        from deeplab.data.pipeline import build_eval_samples
        from deeplab.predict import MultiScalePredictor, PredictSettings, softmax_network

        self.cfg = cfg
        self.split = split
        self.scale = float(cfg.train_eval_scale)
        self.samples = build_eval_samples(cfg, data_root, split=split)  # DataError now, not mid-training
        self._net = softmax_network(network)  # shares the parameters being trained
        settings = PredictSettings(crop_size=cfg.crop_size, scales=(self.scale,), flip=False,
                                   mean=tuple(cfg.image_mean), std=tuple(cfg.image_std), batch_size=1)

        def run(batch: np.ndarray) -> np.ndarray:
            return self._net(ms.Tensor(batch)).asnumpy()

        self._predictor = MultiScalePredictor(run, settings)

    def evaluate(self) -> tuple[float, int]:
        """(mIoU, images). Leaves the shared cells in inference mode: the caller sets training back."""
        from deeplab.metrics import confusion_matrix, mean_iou, per_class_iou

        classes = self.cfg.seg_num_classes
        matrix = np.zeros((classes, classes), dtype=np.int64)
        count = 0
        self._net.set_train(False)
        for image, label, _name in self.samples:
            prediction = self._predictor.predict([image])[0]
            matrix += confusion_matrix(label, prediction, classes, self.cfg.ignore_label)
            count += 1
        return mean_iou(per_class_iou(matrix)), count
