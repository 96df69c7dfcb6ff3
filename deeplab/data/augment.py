"""Train-time augmentation of DeepLabV3 on VOC, as in the reference implementation.

random scale (min_scale..max_scale) -> pad to the crop size (image with the mean, i.e. 0
after normalising; label with ignore_label) -> random crop -> random horizontal flip ->
normalise (BGR mean/std) -> HWC to CHW. Pure numpy/OpenCV; the caller supplies the random
generator, so a sample's augmentation is reproducible from its seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from deeplab.data.errors import DataError


@dataclass(frozen=True)
class TrainAugment:
    crop_size: int
    min_scale: float
    max_scale: float
    mean: tuple[float, float, float]  # BGR
    std: tuple[float, float, float]   # BGR
    ignore_label: int = 255

    def __post_init__(self) -> None:
        if self.crop_size < 8:
            raise ValueError(f"crop_size must be >= 8, got {self.crop_size}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {self.min_scale} and {self.max_scale}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 BGR values, std > 0; got {self.mean} and {self.std}")
        if not 0 <= self.ignore_label <= 255:
            raise ValueError(f"ignore_label must be in 0..255, got {self.ignore_label}")

    @classmethod
    def from_config(cls, cfg: Any) -> "TrainAugment":
        return cls(crop_size=int(cfg.crop_size), min_scale=float(cfg.min_scale), max_scale=float(cfg.max_scale),
                   mean=tuple(float(m) for m in cfg.image_mean), std=tuple(float(s) for s in cfg.image_std),
                   ignore_label=int(cfg.ignore_label))

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(HxWx3 uint8 BGR, HxW uint8) -> (3xCxC float32, CxC int32)."""
        scale = rng.uniform(self.min_scale, self.max_scale)
        height, width = label.shape
        new_h, new_w = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)

        crop = self.crop_size
        pad_h, pad_w = max(crop - new_h, 0), max(crop - new_w, 0)
        if pad_h or pad_w:
            # Padding goes below and to the right, as in the reference; the image pad value
            # is irrelevant because padded pixels are set to 0 after normalising.
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=self.ignore_label)
        top = int(rng.integers(0, label.shape[0] - crop + 1))
        left = int(rng.integers(0, label.shape[1] - crop + 1))
        image = image[top:top + crop, left:left + crop]
        label = label[top:top + crop, left:left + crop]

        normalised = normalize(image, self.mean, self.std)
        valid_h, valid_w = new_h - top, new_w - left  # the real image inside the crop
        if valid_h < crop:
            normalised[valid_h:] = 0.0
        if valid_w < crop:
            normalised[:, valid_w:] = 0.0
        if rng.random() < 0.5:
            normalised = normalised[:, ::-1]
            label = label[:, ::-1]
        return (np.ascontiguousarray(normalised.transpose(2, 0, 1)),
                np.ascontiguousarray(label, dtype=np.int32))


def normalize(image_bgr: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """HxWx3 uint8 BGR -> HxWx3 float32 (image - mean) / std."""
    mean_arr = np.asarray(mean, dtype=np.float32)
    inv_std = 1.0 / np.asarray(std, dtype=np.float32)
    return (image_bgr.astype(np.float32) - mean_arr) * inv_std


def check_same_size(image: np.ndarray, label: np.ndarray, label_path: object) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DataError(
            f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image is "
            f"{image.shape[1]}x{image.shape[0]} (width x height)"
        )
