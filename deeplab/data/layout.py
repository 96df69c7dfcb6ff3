"""Where a data root keeps its images, labels and split lists.

Three kinds of root are understood (``detect_root`` tells them apart):

* ``voc``: a PASCAL VOC 2012 root (``VOCdevkit/VOC2012`` or a ``deeplab-synth`` output):
  ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette or colour PNGs),
  ``ImageSets/Segmentation/<split>.txt``. A ``VOCdevkit`` directory above it is accepted too.
* ``prepared``: a ``deeplab-prepare-voc`` output: ``JPEGImages/``, ``SegmentationClassRaw/``
  (greyscale index PNGs), ``<split>.txt`` lists (train, val, train_aug), ``prepared.json``.
* ``mindrecord``: a ``<split>.mindrecord`` file (or its first shard ``<split>.mindrecord0``),
  or a directory holding such files (``deeplab-prepare-voc --mindrecord`` writes ``<out>/mindrecord/``).

Pure path logic: nothing here decodes an image.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from deeplab.data.errors import DataError

ROOT_KINDS = ("voc", "prepared", "mindrecord")
PREPARED_MARKER = "prepared.json"
_SHARD_SUFFIX = re.compile(r"\.mindrecord\d*$")


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    label: Path


@dataclass(frozen=True)
class DataRoot:
    path: Path
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in ROOT_KINDS:
            raise ValueError(f"kind must be one of {ROOT_KINDS}, got {self.kind!r}")

    def list_file(self, split: str) -> Path:
        if self.kind == "voc":
            return self.path / "ImageSets" / "Segmentation" / f"{split}.txt"
        if self.kind == "prepared":
            return self.path / f"{split}.txt"
        raise DataError(f"{self.path}: a MindRecord root has no split lists")

    def samples(self, split: str) -> list[Sample]:
        """The split's samples in list order; a missing list or an empty one raises DataError."""
        list_path = self.list_file(split)
        if not list_path.is_file():
            raise DataError(f"{list_path}: split list {split!r} not found")
        names = read_id_list(list_path)
        if not names:
            raise DataError(f"{list_path}: split list is empty")
        label_dir = self.path / ("SegmentationClass" if self.kind == "voc" else "SegmentationClassRaw")
        return [Sample(name, self.path / "JPEGImages" / f"{name}.jpg", label_dir / f"{name}.png") for name in names]

    def mindrecord_file(self, split: str) -> Path:
        """The MindRecord file (first shard) holding a split."""
        if self.kind != "mindrecord":
            raise DataError(f"{self.path}: not a MindRecord root")
        if self.path.is_file():
            return self.path
        for candidate in (self.path / f"{split}.mindrecord", self.path / f"{split}.mindrecord0"):
            if candidate.is_file():
                return candidate
        raise DataError(f"{self.path}: no {split}.mindrecord or {split}.mindrecord0 for split {split!r}")


def read_id_list(path: Path) -> list[str]:
    """Sample ids of a VOC-style list: the first field of each non-blank line."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise DataError(f"{path}: cannot read split list ({error.strerror})") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def detect_root(data_root: Union[str, "os.PathLike[str]"]) -> DataRoot:
    """Classify data_root; DataError (naming it) when it is none of the known kinds."""
    path = Path(data_root)
    if path.is_file() and _SHARD_SUFFIX.search(path.name):
        return DataRoot(path, "mindrecord")
    if not path.is_dir():
        raise DataError(f"{path}: data root not found")
    for candidate in (path, path / "VOC2012", path / "VOCdevkit" / "VOC2012"):
        if (candidate / PREPARED_MARKER).is_file() or (candidate / "SegmentationClassRaw").is_dir():
            return DataRoot(candidate, "prepared")
        if (candidate / "SegmentationClass").is_dir() and (candidate / "ImageSets" / "Segmentation").is_dir():
            return DataRoot(candidate, "voc")
    if any(_SHARD_SUFFIX.search(child.name) for child in path.iterdir()):
        return DataRoot(path, "mindrecord")
    raise DataError(
        f"{path}: not a VOC2012 root (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/), "
        "a deeplab-prepare-voc output, nor MindRecord files"
    )
