"""Segmentation metrics: confusion matrix, per-class IoU, mean IoU. Pure numpy.

Rows of the confusion matrix are ground-truth classes, columns predicted classes.
A class absent from both ground truth and prediction has IoU NaN and is left out of
the mean (the reference evaluation's ``np.nanmean``); a class that is predicted but
never present has IoU 0.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(label: np.ndarray, pred: np.ndarray, num_classes: int,
                     ignore_label: int = 255) -> np.ndarray:
    """int64 [num_classes, num_classes] counts of (ground truth, prediction) pixel pairs.

    Pixels whose label is ``ignore_label`` (or any value outside [0, num_classes)) are
    not counted.
    """
    label = np.asarray(label)
    pred = np.asarray(pred)
    if label.shape != pred.shape:
        raise ValueError(f"label shape {label.shape} differs from prediction shape {pred.shape}")
    label = label.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = (label != ignore_label) & (label >= 0) & (label < num_classes)
    if np.any((pred[keep] < 0) | (pred[keep] >= num_classes)):
        raise ValueError(f"prediction has class indices outside [0, {num_classes})")
    counts = np.bincount(num_classes * label[keep] + pred[keep], minlength=num_classes ** 2)
    return counts.reshape(num_classes, num_classes)


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """float64 IoU per class: TP / (TP + FP + FN); NaN where the class never occurs."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1.0), np.nan)


def mean_iou(iou: np.ndarray) -> float:
    """Mean over classes that occur; NaN when none does."""
    iou = np.asarray(iou, dtype=np.float64)
    present = iou[~np.isnan(iou)]
    return float(present.mean()) if present.size else float("nan")
