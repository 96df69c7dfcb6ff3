"""``mindspore.dataset`` pipelines for DeepLabV3 training and evaluation.

    ds_train = build_train_dataset(cfg, data_root, rank_id, rank_size)
        columns "image" (float32, batch x 3 x crop x crop, normalised BGR) and
        "label" (int32, batch x crop x crop, ignore_label where padded or void),
        cfg.batch_size per batch, drop_remainder, shuffled, this rank's shard only.
    for image_bgr, label, name in build_eval_samples(cfg, data_root): ...
        un-augmented uint8 HxWx3 BGR image, uint8 HxW label, sample id.

data_root may be a VOC2012 root (colour/palette labels), a ``deeplab-prepare-voc`` output
(index labels) or MindRecord files (see ``deeplab.data.layout``). Fields read from cfg:
crop_size, min_scale, max_scale, image_mean, image_std, ignore_label, batch_size,
num_parallel_workers, seed, train_split, val_split (and seg_num_classes when present).

Sharding: every rank gets a disjoint 1/rank_size of the shuffled samples (MindSpore's
DistributedSampler, rounded up by wrapping); the shuffle order is drawn from cfg.seed,
which this module installs with ``mindspore.dataset.config.set_seed`` so that all ranks
agree on it. Augmentation randomness is drawn per sample from (seed, rank, index, visit),
so with one worker a run is reproducible.
"""
from __future__ import annotations

import io
import os
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import cv2
import numpy as np
from PIL import Image

import mindspore.dataset as ds

from deeplab.data import voc
from deeplab.data.augment import TrainAugment, check_same_size
from deeplab.data.errors import DataError
from deeplab.data.layout import DataRoot, Sample, detect_root

PathLike = Union[str, "os.PathLike[str]"]


def _num_classes(cfg: Any) -> int:
    return int(getattr(cfg, "seg_num_classes", voc.NUM_CLASSES))


def read_image(path: PathLike) -> np.ndarray:
    """HxWx3 uint8 BGR image; DataError naming the file when it is missing or undecodable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        reason = "not found" if not Path(path).exists() else "cannot be decoded as an image"
        raise DataError(f"{path}: image {reason}")
    return image


def read_sample(sample: Sample, num_classes: int = voc.NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    image = read_image(sample.image)
    label = voc.read_label(sample.label, num_classes=num_classes)
    check_same_size(image, label, sample.label)
    return image, label


def check_samples(samples: Sequence[Sample]) -> None:
    """Fail early, naming the file, on a missing image/label or a label whose size differs.

    Reads only the file headers (Pillow opens lazily), so a VOC-sized list takes seconds;
    doing this before training avoids a failure deep inside a data worker.
    """
    for sample in samples:
        sizes = []
        for path, what in ((sample.image, "image"), (sample.label, "label")):
            try:
                with Image.open(path) as handle:
                    sizes.append(handle.size)
            except FileNotFoundError:
                raise DataError(f"{path}: {what} of sample {sample.name!r} not found") from None
            except (OSError, SyntaxError) as error:
                raise DataError(f"{path}: cannot read {what} ({error})") from None
        if sizes[0] != sizes[1]:
            raise DataError(f"{sample.label}: label is {sizes[1][0]}x{sizes[1][1]} but its image is "
                            f"{sizes[0][0]}x{sizes[0][1]} (width x height)")


class _AugmentedSamples:
    """Random-access source for GeneratorDataset: decode, check and augment sample i."""

    def __init__(self, samples: Sequence[Sample], augment: TrainAugment, seed: int, rank_id: int,
                 num_classes: int, keep_index: bool) -> None:
        self.samples = list(samples)
        self.augment = augment
        self.seed = seed
        self.rank_id = rank_id
        self.num_classes = num_classes
        self.keep_index = keep_index
        self._visits: dict[int, int] = defaultdict(int)
        self._lock = threading.Lock()
        self._cv2_threads_set = False

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        if not self._cv2_threads_set:
            # Workers are the parallelism; OpenCV's own thread pool would only compete with them.
            cv2.setNumThreads(1)
            self._cv2_threads_set = True
        index = int(index)
        with self._lock:
            visit = self._visits[index]
            self._visits[index] = visit + 1
        image, label = read_sample(self.samples[index], self.num_classes)
        rng = np.random.default_rng([self.seed, self.rank_id, index, visit])
        image, label = self.augment(image, label, rng)
        if self.keep_index:
            return image, label, np.array(index, dtype=np.int32)
        return image, label


class _DecodeAugmentRecord:
    """map() operation for MindRecord rows (file_name, data bytes, label PNG bytes)."""

    def __init__(self, augment: TrainAugment, seed: int, rank_id: int, num_classes: int) -> None:
        self.augment = augment
        self.seed = seed
        self.rank_id = rank_id
        self.num_classes = num_classes
        self._rng: Optional[np.random.Generator] = None

    def __call__(self, file_name: np.ndarray, data: np.ndarray, label_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._rng is None:
            # Each worker process draws its own stream (rows have no stable index here).
            self._rng = np.random.default_rng([self.seed, self.rank_id, os.getpid()])
        name = str(file_name.item() if isinstance(file_name, np.ndarray) else file_name)
        image = cv2.imdecode(np.frombuffer(data.tobytes(), dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{name}: image in MindRecord cannot be decoded")
        label = decode_label_png(label_bytes.tobytes(), name, self.num_classes)
        check_same_size(image, label, name)
        return self.augment(image, label, self._rng)


def decode_label_png(png: bytes, source: str, num_classes: int = voc.NUM_CLASSES) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as handle:
        if handle.mode not in ("L", "P"):
            raise DataError(f"{source}: label in MindRecord is mode {handle.mode!r}, expected an index PNG")
        label = np.array(handle, dtype=np.uint8)
    voc.check_indices(label, source, num_classes)
    return label


def build_train_dataset(cfg: Any, data_root: PathLike, rank_id: int = 0, rank_size: int = 1, *,
                        split: Optional[str] = None, validate: bool = True, keep_index: bool = False,
                        python_multiprocessing: Optional[bool] = None) -> ds.Dataset:
    """The augmented, sharded, shuffled, batched train set (columns "image", "label").

    split defaults to cfg.train_split. validate checks every file's presence and size first.
    keep_index adds an int32 "index" column (position in the split list) for inspection.
    python_multiprocessing defaults to True when cfg.num_parallel_workers > 1.
    """
    if not 0 <= rank_id < rank_size:
        raise ValueError(f"need 0 <= rank_id < rank_size, got rank_id={rank_id}, rank_size={rank_size}")
    augment = TrainAugment.from_config(cfg)
    workers = max(1, int(cfg.num_parallel_workers))
    if python_multiprocessing is None:
        python_multiprocessing = workers > 1
    batch_size = int(cfg.batch_size)
    split = split or cfg.train_split
    root = detect_root(data_root)
    ds.config.set_seed(int(cfg.seed))

    if root.kind == "mindrecord":
        if keep_index:
            raise ValueError("keep_index is not available for MindRecord roots")
        dataset = ds.MindDataset(str(root.mindrecord_file(split)), columns_list=["file_name", "data", "label"],
                                 num_shards=rank_size, shard_id=rank_id, shuffle=True, num_parallel_workers=1)
        dataset = dataset.map(operations=_DecodeAugmentRecord(augment, int(cfg.seed), rank_id, _num_classes(cfg)),
                              input_columns=["file_name", "data", "label"], output_columns=["image", "label"],
                              num_parallel_workers=workers, python_multiprocessing=python_multiprocessing)
        size = dataset.get_dataset_size()
    else:
        samples = root.samples(split)
        if validate:
            check_samples(samples)
        size = -(-len(samples) // rank_size)
        columns = ["image", "label"] + (["index"] if keep_index else [])
        source = _AugmentedSamples(samples, augment, int(cfg.seed), rank_id, _num_classes(cfg), keep_index)
        dataset = ds.GeneratorDataset(source, column_names=columns, shuffle=True, num_shards=rank_size,
                                      shard_id=rank_id, num_parallel_workers=workers,
                                      python_multiprocessing=python_multiprocessing)
    if size < batch_size:
        raise DataError(f"{root.path}: split {split!r} gives rank {rank_id} {size} samples, "
                        f"fewer than batch_size {batch_size}")
    return dataset.batch(batch_size, drop_remainder=True)


@dataclass(frozen=True)
class EvalSamples:
    """Un-augmented samples of one split, in list order: iterate (image_bgr, label, name)."""

    root: DataRoot
    split: str
    num_classes: int = voc.NUM_CLASSES

    def _samples(self) -> list[Sample]:
        return self.root.samples(self.split)

    def __len__(self) -> int:
        if self.root.kind == "mindrecord":
            return ds.MindDataset(str(self.root.mindrecord_file(self.split)), columns_list=["file_name"],
                                  shuffle=False).get_dataset_size()
        return len(self._samples())

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        if self.root.kind == "mindrecord":
            yield from self._iter_mindrecord()
            return
        for sample in self._samples():
            image, label = read_sample(sample, self.num_classes)
            yield image, label, sample.name

    def _iter_mindrecord(self) -> Iterator[tuple[np.ndarray, np.ndarray, str]]:
        dataset = ds.MindDataset(str(self.root.mindrecord_file(self.split)),
                                 columns_list=["file_name", "data", "label"], shuffle=False)
        for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
            name = str(row["file_name"].item())
            image = cv2.imdecode(np.frombuffer(row["data"].tobytes(), dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise DataError(f"{name}: image in MindRecord cannot be decoded")
            label = decode_label_png(row["label"].tobytes(), name, self.num_classes)
            check_same_size(image, label, name)
            yield image, label, Path(name).stem


def build_eval_samples(cfg: Any, data_root: PathLike, split: Optional[str] = None) -> EvalSamples:
    """Samples of cfg.val_split (or split) for evaluation; the root and list are checked now."""
    samples = EvalSamples(detect_root(data_root), split or cfg.val_split, _num_classes(cfg))
    if samples.root.kind != "mindrecord":
        samples._samples()  # raise DataError on a missing or empty list up front
    else:
        samples.root.mindrecord_file(samples.split)
    return samples
