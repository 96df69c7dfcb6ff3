"""Read deeplab-eval's eval.json (deeplab/eval.py writes it) into a typed record; pure."""
from __future__ import annotations

import math
from dataclasses import dataclass

from launcher.job.json_input import loads


MAX_CLASSES = 1024  # far above any segmentation data set; keeps a hostile matrix small


@dataclass(frozen=True)
class ImageScore:
    """One validation image's own mIoU, and its files (None for MindRecord data)."""

    name: str
    miou: float | None
    image: str | None
    label: str | None


@dataclass(frozen=True)
class EvalResult:
    miou: float
    per_class_iou: dict[str, float | None]
    ckpt: str
    scales: tuple[float, ...]
    flip: bool
    num_images: int | None
    # Written by deeplab-eval since the report shows a confusion matrix and sample predictions;
    # an older eval.json has none of these and still reads.
    confusion_matrix: tuple[tuple[int, ...], ...] = ()
    per_image: tuple[ImageScore, ...] = ()
    config: str | None = None
    overrides: tuple[str, ...] = ()
    data_root: str | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if math.isnan(self.miou) or not 0.0 <= self.miou <= 1.0:
            raise ValueError(f"mIoU {self.miou} is not in [0, 1]")
        size = len(self.confusion_matrix)
        if size > MAX_CLASSES or any(len(row) != size for row in self.confusion_matrix):
            raise ValueError(f"'confusion_matrix' is not a square matrix of at most {MAX_CLASSES} classes")
        if any(value < 0 for row in self.confusion_matrix for value in row):
            raise ValueError("'confusion_matrix' has a negative count")


def parse_eval(text: str) -> EvalResult:
    """Decode eval.json text; ValueError (with what is wrong) on a bad document."""
    doc = loads(text)  # JsonInputError is a ValueError
    if not isinstance(doc, dict) or "mIoU" not in doc:
        raise ValueError("no 'mIoU' field")
    try:
        return _eval_result(doc)
    except (TypeError, OverflowError) as err:
        raise ValueError(f"a field has the wrong type ({err})") from None


def _eval_result(doc: dict) -> EvalResult:
    per_class = doc.get("per_class_iou")
    per_class = {} if per_class is None else per_class
    if not isinstance(per_class, dict):
        raise ValueError("'per_class_iou' is not an object")
    return EvalResult(
        miou=float(doc["mIoU"]),
        per_class_iou={str(k): None if v is None else float(v) for k, v in per_class.items()},
        ckpt=str(doc.get("ckpt") or ""),
        scales=tuple(float(s) for s in doc.get("scales") or ()),
        flip=bool(doc.get("flip", False)),
        num_images=None if doc.get("num_images") is None else int(doc["num_images"]),
        confusion_matrix=tuple(tuple(_count(v) for v in _list(row, "confusion_matrix row"))
                               for row in _list(doc.get("confusion_matrix") or [], "confusion_matrix")),
        per_image=tuple(_image_score(entry) for entry in _list(doc.get("per_image") or [], "per_image")),
        config=_optional_str(doc.get("config")),
        overrides=tuple(str(item) for item in _list(doc.get("overrides") or [], "overrides")),
        data_root=_optional_str(doc.get("data_root")),
        split=_optional_str(doc.get("split")),
    )


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"'{where}' is not an array")
    return value


def _count(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"'confusion_matrix' holds {str(value)[:20]!r}, not a pixel count")
    return value


def _optional_str(value) -> str | None:
    return None if value is None else str(value)


def _image_score(entry) -> ImageScore:
    if not isinstance(entry, dict) or not entry.get("name"):
        raise ValueError("a 'per_image' entry has no name")
    miou = entry.get("mIoU")
    miou = None if miou is None else float(miou)
    if miou is not None and (math.isnan(miou) or not 0.0 <= miou <= 1.0):
        raise ValueError(f"'per_image' {entry['name']}: mIoU {miou} is not in [0, 1]")
    return ImageScore(str(entry["name"]), miou, _optional_str(entry.get("image")), _optional_str(entry.get("label")))
