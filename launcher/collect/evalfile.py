"""Read deeplab-eval's eval.json (deeplab/eval.py writes it) into a typed record; pure."""
from __future__ import annotations

import math
from dataclasses import dataclass

from launcher.job.json_input import loads


@dataclass(frozen=True)
class EvalResult:
    miou: float
    per_class_iou: dict[str, float | None]
    ckpt: str
    scales: tuple[float, ...]
    flip: bool
    num_images: int | None

    def __post_init__(self) -> None:
        if math.isnan(self.miou) or not 0.0 <= self.miou <= 1.0:
            raise ValueError(f"mIoU {self.miou} is not in [0, 1]")


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
    )
