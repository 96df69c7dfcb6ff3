"""One sample prediction as a picture: image | ground truth | prediction | errors; pure numpy + Pillow.

Masks are class indices (255: ignored, VOC's boundary and "difficult" regions), shown in the
VOC palette that deeplab-infer's mask PNGs carry, so the launcher needs no colour map of its
own. Errors: wrong pixels red, right ones the image in dim grey, ignored ones cream.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PANEL_HEIGHT = 240  # pixels of each panel in the PNG; the page shows four side by side
PANEL_GAP = 4
WRONG_RGB = (230, 30, 30)
VOID_RGB = (224, 224, 192)  # VOC's colour of index 255
IGNORE_INDEX = 255


def _fit_height(panel: np.ndarray, height: int, nearest: bool) -> np.ndarray:
    from PIL import Image

    if panel.shape[0] == height:
        return panel
    width = max(1, round(panel.shape[1] * height / panel.shape[0]))
    resample = Image.NEAREST if nearest else Image.BILINEAR
    return np.asarray(Image.fromarray(panel).resize((width, height), resample))


def compose_panel(image_rgb: np.ndarray, label: np.ndarray, prediction: np.ndarray, palette: np.ndarray,
                  height: int = PANEL_HEIGHT) -> np.ndarray:
    """image | ground truth | prediction | errors, each ``height`` pixels high, as one RGB array.

    ``label`` and ``prediction`` are class indices (255: ignored) of the image's size; ``palette``
    is (256, 3) RGB. Errors: wrong pixels red, right ones the image in dim grey, ignored ones cream.
    """
    if not (image_rgb.shape[:2] == label.shape == prediction.shape):
        raise ValueError(f"sizes differ: image {image_rgb.shape[:2]}, ground truth {label.shape}, "
                         f"prediction {prediction.shape}")
    grey = image_rgb.astype(np.float32).mean(axis=2, keepdims=True) * 0.45 + 60.0
    errors = np.repeat(grey, 3, axis=2).astype(np.uint8)
    errors[(label != prediction) & (label != IGNORE_INDEX)] = WRONG_RGB
    errors[label == IGNORE_INDEX] = VOID_RGB
    panels = [_fit_height(image_rgb, height, nearest=False), _fit_height(palette[label], height, nearest=True),
              _fit_height(palette[prediction], height, nearest=True), _fit_height(errors, height, nearest=True)]
    gap = np.full((height, PANEL_GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1)


def read_labels(path: Path, palette: np.ndarray) -> np.ndarray:
    """Class indices of a label PNG: a palette or grey PNG holds them; a colour PNG is mapped back
    through the palette (a colour not in it counts as ignored)."""
    from PIL import Image

    with Image.open(path) as label:
        if label.mode in ("P", "L", "I", "I;16"):
            return np.asarray(label).astype(np.int64)
        rgb = np.asarray(label.convert("RGB")).astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    codes = (palette[:, 0].astype(np.int64) << 16) | (palette[:, 1].astype(np.int64) << 8) | palette[:, 2]
    lookup = {int(code): index for index, code in reversed(list(enumerate(codes)))}
    return np.vectorize(lambda code: lookup.get(int(code), IGNORE_INDEX), otypes=[np.int64])(packed)


def read_mask(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """deeplab-infer's mask: class indices and the (256, 3) RGB palette it carries."""
    from PIL import Image

    with Image.open(path) as mask:
        if mask.mode != "P" or not mask.getpalette():
            raise ValueError(f"{path.name}: not a palette PNG")
        colours = np.zeros((256, 3), dtype=np.uint8)
        flat = np.asarray(mask.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
        colours[: len(flat)] = flat
        return np.asarray(mask).astype(np.int64), colours
