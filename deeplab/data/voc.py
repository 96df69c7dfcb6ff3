"""PASCAL VOC 2012 classes, colour map and label files.

VOC label PNGs are palette ("P" mode) images: the palette index of a pixel is its class,
255 marks boundaries and "difficult" regions that training and evaluation ignore, and the
palette maps class ``i`` to a fixed colour (255 -> 224,224,192). Reading such a PNG with
OpenCV returns the *colours*, so labels are read with Pillow here, and colour (RGB) PNGs
are mapped back through the colour map.
"""
from __future__ import annotations

import io
import os
from typing import Union

import numpy as np
from PIL import Image

from deeplab.atomic_write import write_bytes_atomically
from deeplab.data.errors import DataError

PathLike = Union[str, "os.PathLike[str]"]

CLASS_NAMES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = 255


def _voc_colour_map(entries: int = 256) -> np.ndarray:
    """The VOC devkit's colour map: bits of the index spread over R, G, B from the top bit down."""
    colours = np.zeros((entries, 3), dtype=np.uint8)
    for index in range(entries):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        colours[index] = (red, green, blue)
    return colours


COLOUR_MAP: np.ndarray = _voc_colour_map()  # (256, 3) RGB, row i = colour of index i
COLOUR_MAP.setflags(write=False)
VOID_COLOUR = tuple(int(c) for c in COLOUR_MAP[IGNORE_INDEX])  # (224, 224, 192)

# Colours that may appear in a colour label PNG: the 21 classes and the void colour.
_VALID_INDICES = np.array(list(range(NUM_CLASSES)) + [IGNORE_INDEX], dtype=np.int64)


def _pack_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


_PACKED_VALID = _pack_rgb(COLOUR_MAP[_VALID_INDICES])


def colours_to_indices(rgb: np.ndarray, source: PathLike = "<array>") -> np.ndarray:
    """Map an HxWx3 RGB colour label back to class indices; unknown colours raise DataError."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DataError(f"{source}: expected an RGB label image, got shape {rgb.shape}")
    packed = _pack_rgb(rgb)
    unique, inverse = np.unique(packed, return_inverse=True)
    order = np.argsort(_PACKED_VALID)
    sorted_valid = _PACKED_VALID[order]
    position = np.clip(np.searchsorted(sorted_valid, unique), 0, len(sorted_valid) - 1)
    known = sorted_valid[position] == unique
    if not known.all():
        bad = int(unique[~known][0])
        colour = ((bad >> 16) & 255, (bad >> 8) & 255, bad & 255)
        raise DataError(
            f"{source}: unknown label colour RGB{colour} (not a VOC class colour nor the void colour)"
        )
    indices = _VALID_INDICES[order][position]
    return indices[inverse].reshape(rgb.shape[:2]).astype(np.uint8)


def check_indices(label: np.ndarray, source: PathLike = "<array>", num_classes: int = NUM_CLASSES) -> None:
    """Raise DataError unless every value is a class index (< num_classes) or IGNORE_INDEX."""
    bad = (label >= num_classes) & (label != IGNORE_INDEX)
    if bad.any():
        value = int(label[bad][0])
        raise DataError(
            f"{source}: label value {value} is neither a class (0..{num_classes - 1}) nor {IGNORE_INDEX}"
        )


def read_label(path: PathLike, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Read a label PNG into an HxW uint8 class-index array.

    Palette PNGs give their palette index, greyscale PNGs their value (the index PNGs that
    ``deeplab-prepare-voc`` writes), RGB PNGs are mapped through the VOC colour map.
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("P", "L"):
                label = np.array(image, dtype=np.uint8)
            elif mode in ("RGB", "RGBA"):
                label = colours_to_indices(np.asarray(image.convert("RGB")), source=path)
            else:
                raise DataError(f"{path}: unsupported label PNG mode {mode!r} (expected P, L or RGB)")
    except FileNotFoundError:
        raise DataError(f"{path}: label file not found") from None
    except (OSError, SyntaxError) as error:  # Pillow reports corrupt files as OSError/SyntaxError
        raise DataError(f"{path}: cannot read label image ({error})") from None
    check_indices(label, source=path, num_classes=num_classes)
    return label


def palette_bytes() -> bytes:
    """The 768-byte VOC palette for Pillow's putpalette."""
    return COLOUR_MAP.tobytes()


def encode_palette_png(label: np.ndarray) -> Image.Image:
    if label.ndim != 2 or label.dtype != np.uint8:
        raise ValueError(f"label must be an HxW uint8 array, got {label.dtype} {label.shape}")
    # frombytes keeps the values as palette indices (fromarray(mode="P") is deprecated in Pillow 11+).
    image = Image.frombytes("P", (label.shape[1], label.shape[0]), np.ascontiguousarray(label).tobytes())
    image.putpalette(palette_bytes())
    return image


def write_palette_png(path: PathLike, label: np.ndarray) -> None:
    """Write an HxW uint8 index array as a VOC palette PNG, atomically (temp name, then rename)."""
    encoded = io.BytesIO()
    encode_palette_png(label).save(encoded, format="PNG")
    write_bytes_atomically(path, encoded.getvalue())


def colorize(label: np.ndarray) -> np.ndarray:
    """HxW index array -> HxWx3 uint8 RGB image in VOC colours (255 -> the void colour)."""
    return COLOUR_MAP[label]
