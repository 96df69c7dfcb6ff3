"""deeplab.data: VOC colour map and label files, deeplab-synth, deeplab-prepare-voc, pipelines."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from PIL import Image

from deeplab.data import voc
from deeplab.data.augment import TrainAugment
from deeplab.data.errors import DataError
from deeplab.data.layout import detect_root, read_id_list
from deeplab.data.synth import write_synthetic_voc

BIN = Path(sys.executable).parent
ENV = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}


def pipeline_cfg(**overrides) -> SimpleNamespace:
    values = dict(crop_size=65, min_scale=0.5, max_scale=2.0, image_mean=[103.53, 116.28, 123.675],
                  image_std=[57.375, 57.120, 58.395], ignore_label=255, batch_size=2, num_parallel_workers=1,
                  seed=1, train_split="train", val_split="val")
    values.update(overrides)
    return SimpleNamespace(**values)


def run_cli(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def mini_voc(source: Path, target: Path, train: int = 3, val: int = 2) -> Path:
    """A copy of the first few samples of a VOC root, to damage in bad-input tests."""
    lists = target / "ImageSets" / "Segmentation"
    for sub in ("JPEGImages", "SegmentationClass"):
        (target / sub).mkdir(parents=True)
    lists.mkdir(parents=True)
    for split, count in (("train", train), ("val", val)):
        names = read_id_list(source / "ImageSets" / "Segmentation" / f"{split}.txt")[:count]
        (lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
        for name in names:
            shutil.copy(source / "JPEGImages" / f"{name}.jpg", target / "JPEGImages")
            shutil.copy(source / "SegmentationClass" / f"{name}.png", target / "SegmentationClass")
    return target


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- colour map and label files -------------------------------------------------------------

def test_colour_map_has_the_voc_colours():
    assert len(voc.CLASS_NAMES) == 21 and voc.CLASS_NAMES[15] == "person"
    assert tuple(voc.COLOUR_MAP[0]) == (0, 0, 0)
    assert tuple(voc.COLOUR_MAP[1]) == (128, 0, 0)
    assert tuple(voc.COLOUR_MAP[15]) == (192, 128, 128)
    assert tuple(voc.COLOUR_MAP[20]) == (0, 64, 128)
    assert voc.VOID_COLOUR == (224, 224, 192)
    assert len({tuple(c) for c in voc.COLOUR_MAP}) == 256


def test_colours_map_back_to_indices_and_unknown_colours_are_named():
    rng = np.random.default_rng(0)
    label = rng.choice(np.r_[np.arange(21), 255], size=(13, 17)).astype(np.uint8)
    assert np.array_equal(voc.colours_to_indices(voc.colorize(label)), label)
    rgb = voc.colorize(label).copy()
    rgb[3, 4] = (1, 2, 3)
    with pytest.raises(DataError, match=r"some/label\.png: unknown label colour RGB\(1, 2, 3\)"):
        voc.colours_to_indices(rgb, source="some/label.png")


def test_palette_png_round_trip_and_other_label_modes(tmp_path):
    label = np.zeros((20, 30), dtype=np.uint8)
    label[2:9, 3:12] = 15
    label[10:, 20:] = 7
    label[8, :] = 255
    path = tmp_path / "a.png"
    voc.write_palette_png(path, label)
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    assert np.array_equal(voc.read_label(path), label)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left behind

    Image.fromarray(voc.colorize(label)).save(tmp_path / "rgb.png")
    assert np.array_equal(voc.read_label(tmp_path / "rgb.png"), label)
    Image.fromarray(label).save(tmp_path / "grey.png")
    assert np.array_equal(voc.read_label(tmp_path / "grey.png"), label)

    label[0, 0] = 40
    Image.fromarray(label).save(tmp_path / "bad.png")
    with pytest.raises(DataError, match="bad.png: label value 40"):
        voc.read_label(tmp_path / "bad.png")
    with pytest.raises(DataError, match="missing.png: label file not found"):
        voc.read_label(tmp_path / "missing.png")


# --- deeplab-synth ----------------------------------------------------------------------------

def test_synthetic_set_has_the_voc_layout(synthetic_voc):
    root = synthetic_voc
    assert detect_root(root).kind == "voc"
    lists = root / "ImageSets" / "Segmentation"
    train, val = read_id_list(lists / "train.txt"), read_id_list(lists / "val.txt")
    assert len(train) == 16 and len(val) == 8 and not set(train) & set(val)
    assert read_id_list(lists / "trainval.txt") == train + val
    for name in train + val:
        image = cv2.imread(str(root / "JPEGImages" / f"{name}.jpg"))
        with Image.open(root / "SegmentationClass" / f"{name}.png") as png:
            assert png.mode == "P"
        label = voc.read_label(root / "SegmentationClass" / f"{name}.png")
        assert image.shape == label.shape + (3,) and image.shape[0] == 96
        assert (label == 255).any() and (label == 0).any()


def test_synthetic_set_shows_all_classes_with_textures_and_boundary_bands(synthetic_voc):
    for split in ("train", "val"):
        seen: set[int] = set()
        for name in read_id_list(synthetic_voc / "ImageSets" / "Segmentation" / f"{split}.txt"):
            label = voc.read_label(synthetic_voc / "SegmentationClass" / f"{name}.png")
            image = cv2.imread(str(synthetic_voc / "JPEGImages" / f"{name}.jpg"))
            classes = set(np.unique(label).tolist()) - {0, 255}
            seen |= classes
            assert len(classes) >= 2  # several objects per image
            for class_id in classes:
                inside = cv2.erode((label == class_id).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
                if inside.sum() > 50:  # a patterned object, not one flat colour
                    assert image[inside].std(axis=0).max() > 12
            # the void band separates every object from the background
            objects = (label != 0) & (label != 255)
            touching = objects[:, 1:] & (label[:, :-1] == 0) | objects[:, :-1] & (label[:, 1:] == 0)
            assert not touching.any()
        assert seen == set(range(1, 21)), split


def test_synthetic_class_styles_are_pairwise_distinct():
    from deeplab.data.synth_shapes import STYLES

    assert [s.class_id for s in STYLES] == list(range(1, 21))
    assert len({s.shape for s in STYLES}) == 20
    assert len({s.hue for s in STYLES}) == 20 and len({s.second_hue for s in STYLES}) == 20
    for style in STYLES:
        assert style.hue != style.second_hue
        for other in STYLES:
            # no class is another's tones reversed in the same pattern
            if other is not style and other.pattern == style.pattern:
                assert (other.hue, other.second_hue) != (style.second_hue, style.hue)


def test_synthetic_set_is_deterministic_per_seed(tmp_path):
    first = write_synthetic_voc(tmp_path / "a", train=3, val=2, size=64, seed=7)
    second = write_synthetic_voc(tmp_path / "b", train=3, val=2, size=64, seed=7)
    other = write_synthetic_voc(tmp_path / "c", train=3, val=2, size=64, seed=8)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file() and p.name != "synth.json")
    assert len(files) == 3 + 5 + 5  # lists + images + labels
    assert all(digest(first / f) == digest(second / f) for f in files)
    assert digest(first / "JPEGImages" / "train_00000.jpg") != digest(other / "JPEGImages" / "train_00000.jpg")


def test_synth_cli_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "set"
    assert run_cli("deeplab-synth", "--out", out, "--train", "2", "--val", "1", "--size", "48").returncode == 0
    before = digest(out / "JPEGImages" / "train_00000.jpg")
    proc = run_cli("deeplab-synth", "--out", out, "--train", "2", "--val", "1", "--size", "48", "--seed", "3")
    assert_one_line_error(proc, str(out), "--force")
    assert digest(out / "JPEGImages" / "train_00000.jpg") == before
    proc = run_cli("deeplab-synth", "--out", out, "--train", "2", "--val", "1", "--size", "48", "--seed", "3", "--force")
    assert proc.returncode == 0, proc.stderr
    assert digest(out / "JPEGImages" / "train_00000.jpg") != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temp or old directories left
    assert_one_line_error(run_cli("deeplab-synth", "--out", tmp_path / "x", "--size", "8"), "--size")


# --- deeplab-prepare-voc ----------------------------------------------------------------------

def write_fake_sbd(voc_root: Path, target: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """An SBD-like dataset dir: one VOC train id, one VOC val id, two ids only SBD has."""
    from scipy.io import savemat

    (target / "cls").mkdir(parents=True)
    (target / "img").mkdir()
    train = read_id_list(voc_root / "ImageSets" / "Segmentation" / "train.txt")
    val = read_id_list(voc_root / "ImageSets" / "Segmentation" / "val.txt")
    labels = {}
    for new_name, source in (("sbd_00000", train[0]), ("sbd_00001", train[1])):
        shutil.copy(voc_root / "JPEGImages" / f"{source}.jpg", target / "img" / f"{new_name}.jpg")
        height, width = cv2.imread(str(target / "img" / f"{new_name}.jpg")).shape[:2]
        label = np.zeros((height, width), dtype=np.uint8)
        label[height // 4: height // 2, width // 3:] = 12
        labels[new_name] = label
    for name in (train[0], val[0]):  # ids both data sets have: VOC's label wins, val stays out
        labels[name] = np.ones_like(voc.read_label(voc_root / "SegmentationClass" / f"{name}.png"))
    for name, label in labels.items():
        savemat(target / "cls" / f"{name}.mat",
                {"GTcls": {"Segmentation": label, "Boundaries": np.zeros(1), "CategoriesPresent": np.unique(label)}})
    (target / "train.txt").write_text(f"sbd_00000\n{train[0]}\n")
    (target / "val.txt").write_text(f"sbd_00001\n{val[0]}\n")
    return ["sbd_00000", "sbd_00001"], labels


def test_prepare_voc_writes_index_labels_lists_and_train_aug(synthetic_voc, tmp_path):
    sbd_only, sbd_labels = write_fake_sbd(synthetic_voc, tmp_path / "sbd" / "dataset")
    out = tmp_path / "prepared"
    proc = run_cli("deeplab-prepare-voc", "--voc-root", synthetic_voc, "--sbd-root", tmp_path / "sbd", "--out", out)
    assert proc.returncode == 0, proc.stderr
    train = read_id_list(synthetic_voc / "ImageSets" / "Segmentation" / "train.txt")
    val = read_id_list(synthetic_voc / "ImageSets" / "Segmentation" / "val.txt")
    assert read_id_list(out / "train.txt") == train
    assert read_id_list(out / "val.txt") == val
    assert read_id_list(out / "train_aug.txt") == train + sbd_only
    for name in train + val:
        with Image.open(out / "SegmentationClassRaw" / f"{name}.png") as raw:
            assert raw.mode == "L"
            assert np.array_equal(np.array(raw), voc.read_label(synthetic_voc / "SegmentationClass" / f"{name}.png"))
        assert (out / "JPEGImages" / f"{name}.jpg").read_bytes() == (synthetic_voc / "JPEGImages" / f"{name}.jpg").read_bytes()
    for name in sbd_only:
        assert np.array_equal(voc.read_label(out / "SegmentationClassRaw" / f"{name}.png"), sbd_labels[name])
    assert detect_root(out).kind == "prepared"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared", "sbd"]


@pytest.mark.parametrize("damage", ["missing_root", "size_mismatch", "unknown_colour", "missing_image", "not_empty"])
def test_prepare_voc_rejects_bad_input_with_one_line_and_no_output(synthetic_voc, tmp_path, damage):
    root = mini_voc(synthetic_voc, tmp_path / "voc")
    out = tmp_path / "out"
    name = read_id_list(root / "ImageSets" / "Segmentation" / "val.txt")[1]
    label_path = root / "SegmentationClass" / f"{name}.png"
    expected = str(label_path)
    if damage == "missing_root":
        shutil.rmtree(root)
        expected = str(root)
    elif damage == "size_mismatch":
        label = voc.read_label(label_path)
        voc.write_palette_png(label_path, cv2.resize(label, (40, 30), interpolation=cv2.INTER_NEAREST))
    elif damage == "unknown_colour":
        rgb = voc.colorize(voc.read_label(label_path)).copy()
        rgb[5, 5] = (10, 200, 30)
        Image.fromarray(rgb).save(label_path)
    elif damage == "missing_image":
        (root / "JPEGImages" / f"{name}.jpg").unlink()
        expected = f"{name}.jpg"
    elif damage == "not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
        expected = str(out)
    proc = run_cli("deeplab-prepare-voc", "--voc-root", root, "--out", out)
    assert_one_line_error(proc, expected)
    if damage == "not_empty":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir removed


def test_prepare_voc_mindrecord_feeds_the_pipeline(synthetic_voc, tmp_path):
    from deeplab.data.pipeline import build_eval_samples, build_train_dataset

    out = tmp_path / "prepared"
    proc = run_cli("deeplab-prepare-voc", "--voc-root", synthetic_voc, "--out", out, "--mindrecord", "--shards", "2")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "mindrecord").glob("*.mindrecord?")) == [
        "train.mindrecord0", "train.mindrecord1", "val.mindrecord0", "val.mindrecord1"]
    cfg = pipeline_cfg()
    from_records = {name: (image, label) for image, label, name in build_eval_samples(cfg, out / "mindrecord")}
    from_pngs = {name: (image, label) for image, label, name in build_eval_samples(cfg, synthetic_voc)}
    assert from_records.keys() == from_pngs.keys()
    for name, (image, label) in from_pngs.items():
        assert np.array_equal(from_records[name][0], image) and np.array_equal(from_records[name][1], label)
    batches = list(build_train_dataset(cfg, out / "mindrecord").create_tuple_iterator(output_numpy=True, num_epochs=1))
    assert len(batches) == 8 and batches[0][0].shape == (2, 3, 65, 65) and batches[0][1].dtype == np.int32


# --- augmentation and pipelines ---------------------------------------------------------------

def test_augment_pads_with_ignore_and_zero_and_is_reproducible():
    augment = TrainAugment(crop_size=64, min_scale=0.5, max_scale=0.5, mean=(100.0, 110.0, 120.0),
                           std=(50.0, 50.0, 50.0), ignore_label=255)
    image = np.full((40, 50, 3), 200, dtype=np.uint8)
    label = np.full((40, 50), 3, dtype=np.uint8)
    out_image, out_label = augment(image, label, np.random.default_rng(5))
    assert out_image.shape == (3, 64, 64) and out_image.dtype == np.float32
    assert out_label.shape == (64, 64) and out_label.dtype == np.int32
    real = out_label == 3  # the 20x25 scaled image; everything else is padding
    assert real.sum() == 20 * 25 and (out_label[~real] == 255).all()
    assert (out_image[:, ~real] == 0).all()
    assert np.allclose(out_image[:, real], ((200 - np.array([100, 110, 120])) / 50.0)[:, None])
    again = augment(image, label, np.random.default_rng(5))
    assert np.array_equal(again[0], out_image) and np.array_equal(again[1], out_label)


def test_train_dataset_shapes_and_dtypes(synthetic_voc):
    from deeplab.data.pipeline import build_train_dataset

    dataset = build_train_dataset(pipeline_cfg(), synthetic_voc)
    assert dataset.get_dataset_size() == 8
    batches = list(dataset.create_dict_iterator(output_numpy=True, num_epochs=1))
    assert len(batches) == 8
    for batch in batches:
        assert batch["image"].shape == (2, 3, 65, 65) and batch["image"].dtype == np.float32
        assert batch["label"].shape == (2, 65, 65) and batch["label"].dtype == np.int32
        assert set(np.unique(batch["label"])) <= set(range(21)) | {255}
    labels = np.concatenate([b["label"].ravel() for b in batches])
    assert len(set(labels.tolist()) - {0, 255}) >= 10


def test_train_dataset_is_reproducible_from_the_seed(synthetic_voc):
    from deeplab.data.pipeline import build_train_dataset

    def first_batches(seed: int) -> list[np.ndarray]:
        dataset = build_train_dataset(pipeline_cfg(seed=seed), synthetic_voc)
        return [b[1] for b in dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)][:3]

    same = zip(first_batches(3), first_batches(3))
    assert all(np.array_equal(a, b) for a, b in same)
    assert not all(np.array_equal(a, b) for a, b in zip(first_batches(3), first_batches(4)))


def test_train_shards_are_disjoint_and_cover_the_split(synthetic_voc):
    from deeplab.data.pipeline import build_train_dataset

    cfg = pipeline_cfg(num_parallel_workers=2)  # two worker processes (python_multiprocessing)
    seen = []
    for rank in range(2):
        dataset = build_train_dataset(cfg, synthetic_voc, rank_id=rank, rank_size=2, keep_index=True)
        indices = [int(i) for batch in dataset.create_dict_iterator(output_numpy=True, num_epochs=1)
                   for i in batch["index"]]
        assert len(indices) == 8 and len(set(indices)) == 8
        seen.append(set(indices))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(16))


def test_pipeline_reads_raw_and_prepared_roots_alike_and_names_bad_files(synthetic_voc, tmp_path):
    from deeplab.data.pipeline import build_eval_samples, build_train_dataset

    cfg = pipeline_cfg()
    raw = build_eval_samples(cfg, synthetic_voc)
    assert len(raw) == 8
    samples = list(raw)
    image, label, name = samples[0]
    assert image.dtype == np.uint8 and image.ndim == 3 and label.dtype == np.uint8 and label.shape == image.shape[:2]
    assert [s[2] for s in samples] == read_id_list(synthetic_voc / "ImageSets" / "Segmentation" / "val.txt")

    root = mini_voc(synthetic_voc, tmp_path / "voc", train=4)
    bad = read_id_list(root / "ImageSets" / "Segmentation" / "train.txt")[2]
    bad_label = root / "SegmentationClass" / f"{bad}.png"
    voc.write_palette_png(bad_label, np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(DataError, match=f"{bad}.png: label is 10x10 but its image is"):
        build_train_dataset(cfg, root)
    with pytest.raises(DataError, match="not a VOC2012 root"):
        build_train_dataset(cfg, tmp_path)
    with pytest.raises(DataError, match="train_aug.txt: split list 'train_aug' not found"):
        build_train_dataset(pipeline_cfg(train_split="train_aug"), synthetic_voc)
