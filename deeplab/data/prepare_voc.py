"""deeplab-prepare-voc: turn PASCAL VOC 2012 (+ SBD) into training-ready index labels and lists.

Usage:
    deeplab-prepare-voc --voc-root VOCdevkit/VOC2012 [--sbd-root DIR] --out DIR
                        [--mindrecord] [--shards N] [--force]

Reads the VOC root (JPEGImages/, SegmentationClass/ colour or palette PNGs,
ImageSets/Segmentation/{train,val}.txt) and writes:

    DIR/JPEGImages/<id>.jpg          hard links to the source images (copies across file systems)
    DIR/SegmentationClassRaw/<id>.png greyscale index PNGs: class 0..20, 255 = void/boundary
    DIR/train.txt, DIR/val.txt       sample ids, one per line
    DIR/train_aug.txt                with --sbd-root: VOC train + SBD train + SBD val, minus VOC val
    DIR/mindrecord/<split>.mindrecord[0..N-1] (+ .db)   with --mindrecord: rows of
                                     (file_name, data = JPEG bytes, label = index PNG bytes)
    DIR/prepared.json                what was written, from where

--sbd-root is the Semantic Boundaries Dataset's ``benchmark_RELEASE/dataset`` directory
(or ``benchmark_RELEASE`` above it): ``cls/<id>.mat`` (MATLAB files with GTcls.Segmentation),
``train.txt``, ``val.txt``, ``img/<id>.jpg``. Where an id has both, the VOC label wins
(it has the boundary bands). SBD images are taken from the VOC root, else from SBD's img/.

DIR is then a data root for deeplab-train/deeplab-eval (``cfg.train_split: train_aug`` uses
the augmented list), and DIR/mindrecord is one too.

Every label is checked: its size must equal its image's, and colour PNGs may contain only
VOC class colours and the void colour (224,224,192). The output is built in a temporary
directory next to DIR and renamed into place, so DIR is complete or absent. An existing
non-empty DIR is replaced only with --force.

Exit status: 0 on success; 2 on bad input (one line on stderr naming the file).
"""
from __future__ import annotations

import argparse
import errno
import io
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

from console_progress import progress
from deeplab.data import voc
from deeplab.data.errors import DataError
from deeplab.data.output_dir import build_output_dir, check_output_dir
from deeplab.data.layout import PREPARED_MARKER, detect_root, read_id_list

PathLike = Union[str, "os.PathLike[str]"]
MINDRECORD_SCHEMA = {"file_name": {"type": "string"}, "data": {"type": "bytes"}, "label": {"type": "bytes"}}
MINDRECORD_BATCH = 64


@dataclass(frozen=True)
class PrepareRequest:
    voc_root: Path
    out: Path
    sbd_root: Optional[Path] = None
    mindrecord: bool = False
    shards: int = 1
    force: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 1000:
            raise DataError(f"--shards must be in 1..1000, got {self.shards}")
        if self.shards != 1 and not self.mindrecord:
            raise DataError("--shards needs --mindrecord")


@dataclass
class PrepareResult:
    out: Path
    splits: dict[str, int] = field(default_factory=dict)
    mindrecord_files: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Entry:
    """Where one sample's image and label come from."""
    name: str
    image: Path
    voc_label: Optional[Path] = None  # PNG in the VOC root
    sbd_label: Optional[Path] = None  # .mat in SBD


def _sbd_dataset_dir(sbd_root: Path) -> Path:
    for candidate in (sbd_root, sbd_root / "dataset"):
        if (candidate / "cls").is_dir():
            return candidate
    if not sbd_root.is_dir():
        raise DataError(f"{sbd_root}: SBD root not found")
    raise DataError(f"{sbd_root}: not an SBD dataset directory (no cls/ here or in dataset/)")


def read_sbd_label(path: Path) -> np.ndarray:
    """GTcls.Segmentation of an SBD cls .mat file as an HxW uint8 index array."""
    from scipy.io import loadmat  # scipy comes with MindSpore; imported only when SBD is used

    try:
        mat = loadmat(str(path), squeeze_me=True, struct_as_record=True)
        label = np.asarray(mat["GTcls"]["Segmentation"].item())
    except FileNotFoundError:
        raise DataError(f"{path}: SBD label not found") from None
    except (KeyError, ValueError, TypeError, OSError) as error:
        raise DataError(f"{path}: not an SBD cls file with GTcls.Segmentation ({error})") from None
    if label.ndim != 2:
        raise DataError(f"{path}: GTcls.Segmentation has shape {label.shape}, expected H x W")
    if label.min() < 0 or label.max() > 255:
        raise DataError(f"{path}: GTcls.Segmentation has values outside 0..255")
    label = label.astype(np.uint8)
    voc.check_indices(label, source=path)
    return label


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as handle:
            return handle.size
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (OSError, SyntaxError) as error:
        raise DataError(f"{path}: cannot read image ({error})") from None


def _plan_entries(request: PrepareRequest) -> tuple[dict[str, list[str]], dict[str, _Entry]]:
    """Split lists and, per id, the source files: pure reading of lists and directory names."""
    root = detect_root(request.voc_root)
    if root.kind != "voc":
        raise DataError(f"{request.voc_root}: expected a VOC2012 root (JPEGImages/, SegmentationClass/, "
                        f"ImageSets/Segmentation/), found a {root.kind} data root")
    splits = {}
    for split in ("train", "val"):
        list_path = root.list_file(split)
        if not list_path.is_file():
            raise DataError(f"{list_path}: split list not found")
        splits[split] = read_id_list(list_path)
        if not splits[split]:
            raise DataError(f"{list_path}: split list is empty")
    entries = {
        name: _Entry(name, root.path / "JPEGImages" / f"{name}.jpg",
                     voc_label=root.path / "SegmentationClass" / f"{name}.png")
        for split in ("train", "val") for name in splits[split]
    }
    if request.sbd_root is not None:
        sbd = _sbd_dataset_dir(request.sbd_root)
        sbd_ids: list[str] = []
        for split in ("train", "val"):
            list_path = sbd / f"{split}.txt"
            if not list_path.is_file():
                raise DataError(f"{list_path}: SBD split list not found")
            sbd_ids += read_id_list(list_path)
        val = set(splits["val"])
        train_aug = list(splits["train"])
        seen = set(train_aug)
        for name in sorted(set(sbd_ids)):
            if name in seen or name in val:
                continue
            image = root.path / "JPEGImages" / f"{name}.jpg"
            if not image.is_file():
                image = sbd / "img" / f"{name}.jpg"
            entries[name] = _Entry(name, image, sbd_label=sbd / "cls" / f"{name}.mat")
            train_aug.append(name)
            seen.add(name)
        splits["train_aug"] = train_aug
    return splits, entries


def _load_label(entry: _Entry) -> np.ndarray:
    label = voc.read_label(entry.voc_label) if entry.voc_label is not None else read_sbd_label(entry.sbd_label)
    width, height = _image_size(entry.image)
    if label.shape != (height, width):
        label_path = entry.voc_label or entry.sbd_label
        raise DataError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image "
                        f"{entry.image} is {width}x{height} (width x height)")
    return label


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        shutil.copyfile(source, target)


def _index_png_bytes(label: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")  # uint8 HxW -> mode "L"
    return buffer.getvalue()


def _write_mindrecord(out: Path, split: str, names: Sequence[str], shards: int, show_progress: bool = False
                      ) -> list[str]:
    from mindspore.mindrecord import FileWriter  # MindSpore only for --mindrecord

    directory = out / "mindrecord"
    directory.mkdir(exist_ok=True)
    writer = FileWriter(str(directory / f"{split}.mindrecord"), shard_num=shards)
    writer.add_schema(MINDRECORD_SCHEMA, f"VOC2012 {split}")
    rows = []
    meter = progress(len(names), f"records ({split})", "deeplab-prepare-voc", enabled=show_progress)
    for name in names:
        meter.update()
        rows.append({
            "file_name": f"{name}.jpg",
            "data": (out / "JPEGImages" / f"{name}.jpg").read_bytes(),
            "label": (out / "SegmentationClassRaw" / f"{name}.png").read_bytes(),
        })
        if len(rows) == MINDRECORD_BATCH:
            writer.write_raw_data(rows)
            rows = []
    if rows:
        writer.write_raw_data(rows)
    writer.commit()
    meter.close()
    return sorted(p.name for p in directory.glob(f"{split}.mindrecord*") if not p.name.endswith(".db"))


def _build(request: PrepareRequest, target: Path, show_progress: bool = False) -> PrepareResult:
    splits, entries = _plan_entries(request)
    (target / "JPEGImages").mkdir()
    (target / "SegmentationClassRaw").mkdir()
    with progress(len(entries), "images", "deeplab-prepare-voc", enabled=show_progress) as meter:
        for entry in entries.values():
            label = _load_label(entry)
            (target / "SegmentationClassRaw" / f"{entry.name}.png").write_bytes(_index_png_bytes(label))
            _link_or_copy(entry.image, target / "JPEGImages" / f"{entry.name}.jpg")
            meter.update()
    result = PrepareResult(out=request.out)
    for split, names in splits.items():
        (target / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        result.splits[split] = len(names)
        if request.mindrecord:
            result.mindrecord_files[split] = _write_mindrecord(target, split, names, request.shards, show_progress)
    marker = {
        "format": "deeplab-prepare-voc", "schema": 1,
        "voc_root": str(request.voc_root.absolute()),
        "sbd_root": str(request.sbd_root.absolute()) if request.sbd_root else None,
        "splits": result.splits, "num_classes": voc.NUM_CLASSES, "ignore_label": voc.IGNORE_INDEX,
        "mindrecord": result.mindrecord_files or None,
    }
    (target / PREPARED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return result


def prepare_voc(voc_root: PathLike, out: PathLike, sbd_root: Optional[PathLike] = None, mindrecord: bool = False,
                shards: int = 1, force: bool = False, show_progress: bool = False) -> PrepareResult:
    """Write the prepared data root at out (atomically); DataError on bad input."""
    request = PrepareRequest(Path(voc_root), Path(out).absolute(), Path(sbd_root) if sbd_root else None,
                             mindrecord, shards, force)
    if not request.voc_root.is_dir():
        raise DataError(f"{request.voc_root}: VOC root not found")
    check_output_dir(request.out, force)
    return build_output_dir(request.out, lambda temp: _build(request, temp, show_progress))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="deeplab-prepare-voc",
                                     description="Index labels, split lists and MindRecord shards from VOC 2012 (+ SBD).")
    parser.add_argument("--voc-root", required=True, type=Path, help="VOCdevkit/VOC2012 (or a deeplab-synth output)")
    parser.add_argument("--sbd-root", type=Path, help="SBD benchmark_RELEASE/dataset, for train_aug.txt")
    parser.add_argument("--out", required=True, type=Path, help="output directory (a data root)")
    parser.add_argument("--mindrecord", action="store_true", help="also write MindRecord files under OUT/mindrecord")
    parser.add_argument("--shards", type=int, default=1, help="MindRecord shards per split (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty --out")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = prepare_voc(args.voc_root, args.out, sbd_root=args.sbd_root, mindrecord=args.mindrecord,
                             shards=args.shards, force=args.force, show_progress=True)
    except DataError as error:
        print(f"deeplab-prepare-voc: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"deeplab-prepare-voc: error: {error.filename or args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {count}" for split, count in result.splits.items())
    print(f"{result.out}: {counts}" + (" (+ MindRecord)" if result.mindrecord_files else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
