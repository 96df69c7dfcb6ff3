"""What each synthetic class looks like: a shape family and a two-tone texture.

Every VOC class 1..20 gets its own silhouette built from a few polygons (a plane has
wings and a tail, a bicycle two rings and a frame, a person a head, torso and legs...)
with random proportions, and its own appearance: a two-tone texture pattern in a bright
and a dark tone of two hues (see ``_styles``); backgrounds are nearly grey. Parts are
kept at least ~0.28 of the object radius thick so they survive the output stride of a
segmentation network and the void band along boundaries. A
network therefore has colour, texture and shape cues, none of which is a flat colour.
Shapes live in unit coordinates (roughly [-1, 1]^2, y down) and are placed by the caller.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

Polygon = np.ndarray  # (N, 2) float, unit coordinates
ShapeFn = Callable[[np.random.Generator], list[Polygon]]

PATTERNS = ("stripes", "checker", "dots", "rings", "waves")


def _rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)


def _ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 28) -> Polygon:
    angle = np.linspace(0.0, 2.0 * math.pi, points, endpoint=False)
    return np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], axis=1)


def _ring(cx: float, cy: float, outer: float, inner: float, points: int = 28) -> Polygon:
    """An annulus as one polygon: the outer circle, then the inner one backwards (a keyhole cut)."""
    angle = np.linspace(0.0, 2.0 * math.pi, points + 1)
    outer_pts = np.stack([cx + outer * np.cos(angle), cy + outer * np.sin(angle)], axis=1)
    inner_pts = np.stack([cx + inner * np.cos(angle[::-1]), cy + inner * np.sin(angle[::-1])], axis=1)
    return np.concatenate([outer_pts, inner_pts])


def _bar(x0: float, y0: float, x1: float, y1: float, width: float) -> Polygon:
    """A thick line segment."""
    dx, dy = x1 - x0, y1 - y0
    length = math.hypot(dx, dy) or 1.0
    nx, ny = -dy / length * width / 2, dx / length * width / 2
    return np.array([(x0 + nx, y0 + ny), (x1 + nx, y1 + ny), (x1 - nx, y1 - ny), (x0 - nx, y0 - ny)])


def _star(cx: float, cy: float, outer: float, inner: float, tips: int, turn: float = 0.0) -> Polygon:
    angle = turn + np.arange(2 * tips) * math.pi / tips
    radius = np.where(np.arange(2 * tips) % 2 == 0, outer, inner)
    return np.stack([cx + radius * np.sin(angle), cy - radius * np.cos(angle)], axis=1)


def aeroplane(rng: np.random.Generator) -> list[Polygon]:
    span = rng.uniform(0.75, 0.95)
    sweep = rng.uniform(0.1, 0.35)
    return [
        _rect(-1.0, -0.16, 0.95, 0.16),
        np.array([(0.95, -0.16), (1.12, 0.0), (0.95, 0.16)]),
        np.array([(-0.15, 0.0), (0.25, 0.0), (0.05 - sweep, span), (-0.2 - sweep, span)]),
        np.array([(-0.15, 0.0), (0.25, 0.0), (0.05 - sweep, -span), (-0.2 - sweep, -span)]),
        np.array([(-1.0, 0.0), (-0.65, 0.0), (-0.85, -0.5), (-1.1, -0.5)]),
    ]


def bicycle(rng: np.random.Generator) -> list[Polygon]:
    wheel = rng.uniform(0.42, 0.5)
    width = 0.3
    return [
        _ring(-0.55, 0.35, wheel, wheel * 0.3),
        _ring(0.55, 0.35, wheel, wheel * 0.3),
        _bar(-0.55, 0.35, -0.05, -0.3, width),
        _bar(-0.05, -0.3, 0.55, 0.35, width),
        _bar(-0.05, -0.3, 0.4, -0.35, width),
        _bar(-0.55, 0.35, 0.05, 0.35, width),
        _rect(-0.25, -0.5, 0.1, -0.3),
    ]


def bird(rng: np.random.Generator) -> list[Polygon]:
    wing = rng.uniform(0.7, 1.0)
    return [
        _ellipse(0.0, 0.1, 0.62, 0.3),
        _ellipse(0.55, -0.12, 0.22, 0.2),
        np.array([(0.72, -0.18), (1.0, -0.08), (0.72, -0.02)]),
        np.array([(-0.3, 0.0), (0.25, 0.0), (-0.05, -wing)]),
        np.array([(-0.55, 0.05), (-1.0, -0.2), (-0.95, 0.3)]),
    ]


def boat(rng: np.random.Generator) -> list[Polygon]:
    mast = rng.uniform(0.8, 1.0)
    return [
        np.array([(-1.0, 0.25), (1.0, 0.25), (0.7, 0.65), (-0.75, 0.65)]),
        np.array([(-0.05, 0.2), (-0.05, -mast), (0.7, 0.2)]),
        np.array([(-0.12, 0.2), (-0.12, -mast * 0.8), (-0.65, 0.2)]),
    ]


def bottle(rng: np.random.Generator) -> list[Polygon]:
    half = rng.uniform(0.3, 0.42)
    return [
        _rect(-half, -0.25, half, 1.0),
        _ellipse(0.0, -0.25, half, 0.28),
        _rect(-0.15, -0.95, 0.15, -0.3),
        _rect(-0.19, -1.0, 0.19, -0.85),
    ]


def bus(rng: np.random.Generator) -> list[Polygon]:
    height = rng.uniform(0.45, 0.6)
    return [
        _rect(-1.0, -height, 1.0, 0.45),
        _ellipse(-0.6, 0.45, 0.17, 0.17),
        _ellipse(0.6, 0.45, 0.17, 0.17),
        _rect(-1.0, -height - 0.08, -0.6, -height),
    ]


def car(rng: np.random.Generator) -> list[Polygon]:
    roof = rng.uniform(0.4, 0.6)
    return [
        _rect(-1.0, -0.05, 1.0, 0.45),
        np.array([(-0.6, -0.05), (0.55, -0.05), (0.3, -roof), (-0.4, -roof)]),
        _ellipse(-0.6, 0.5, 0.22, 0.22),
        _ellipse(0.6, 0.5, 0.22, 0.22),
    ]


def cat(rng: np.random.Generator) -> list[Polygon]:
    ear = rng.uniform(0.9, 1.1)
    return [
        _ellipse(0.0, 0.15, 0.75, 0.65),
        np.array([(-0.7, -0.05), (-0.6, -ear), (-0.15, -0.45)]),
        np.array([(0.7, -0.05), (0.6, -ear), (0.15, -0.45)]),
    ]


def chair(rng: np.random.Generator) -> list[Polygon]:
    back = rng.uniform(0.8, 1.0)
    return [
        _rect(-0.65, -0.1, 0.65, 0.22),
        _rect(-0.65, -back, -0.33, 0.2),
        _rect(-0.65, 0.2, -0.35, 1.0),
        _rect(0.35, 0.2, 0.65, 1.0),
        _bar(-0.45, -back * 0.5, 0.1, -back * 0.5, 0.3),
    ]


def cow(rng: np.random.Generator) -> list[Polygon]:
    leg = rng.uniform(0.75, 0.9)
    return [
        _rect(-0.9, -0.45, 0.55, 0.25),
        np.array([(0.5, -0.45), (1.0, -0.65), (1.05, -0.2), (0.55, -0.05)]),
        np.array([(0.7, -0.62), (0.75, -0.9), (0.85, -0.6)]),
        _rect(-0.9, 0.2, -0.6, leg),
        _rect(-0.5, 0.2, -0.2, leg),
        _rect(0.05, 0.2, 0.35, leg),
    ]


def diningtable(rng: np.random.Generator) -> list[Polygon]:
    top = rng.uniform(0.2, 0.3)
    return [
        np.array([(-1.0, -0.3), (1.0, -0.3), (0.85, -0.3 - top), (-0.85, -0.3 - top)]),
        _rect(-1.0, -0.3, 1.0, -0.12),
        _rect(-0.95, -0.12, -0.67, 0.85),
        _rect(0.67, -0.12, 0.95, 0.85),
        _rect(-0.15, -0.12, 0.15, 0.6),
    ]


def dog(rng: np.random.Generator) -> list[Polygon]:
    tail = rng.uniform(-0.9, -0.5)
    return [
        _ellipse(-0.1, 0.0, 0.7, 0.32),
        _ellipse(0.72, -0.35, 0.3, 0.26),
        np.array([(0.62, -0.55), (0.5, -0.95), (0.8, -0.6)]),
        _bar(-0.75, -0.1, -1.0, tail, 0.28),
        _rect(-0.7, 0.15, -0.42, 0.8),
        _rect(0.24, 0.15, 0.52, 0.8),
    ]


def horse(rng: np.random.Generator) -> list[Polygon]:
    neck = rng.uniform(0.8, 1.0)
    return [
        _ellipse(-0.2, -0.05, 0.7, 0.3),
        np.array([(0.25, -0.25), (0.5, -0.1), (0.85, -neck), (0.6, -neck)]),
        np.array([(0.6, -neck), (1.05, -neck + 0.15), (1.05, -neck + 0.35), (0.8, -neck + 0.3)]),
        _rect(-0.82, 0.1, -0.54, 1.0),
        _rect(-0.46, 0.1, -0.18, 1.0),
        _rect(0.1, 0.1, 0.38, 1.0),
        _bar(-0.85, -0.15, -1.05, 0.5, 0.28),
    ]


def motorbike(rng: np.random.Generator) -> list[Polygon]:
    wheel = rng.uniform(0.32, 0.4)
    return [
        _ellipse(-0.62, 0.4, wheel, wheel),
        _ellipse(0.62, 0.4, wheel, wheel),
        np.array([(-0.6, 0.35), (0.55, 0.35), (0.45, -0.2), (-0.1, -0.3), (-0.55, -0.1)]),
        _bar(0.45, -0.2, 0.62, -0.65, 0.28),
        _bar(0.5, -0.65, 0.85, -0.7, 0.28),
    ]


def person(rng: np.random.Generator) -> list[Polygon]:
    shoulders = rng.uniform(0.35, 0.5)
    return [
        _ellipse(0.0, -0.78, 0.22, 0.24),
        np.array([(-shoulders, -0.52), (shoulders, -0.52), (0.3, 0.25), (-0.3, 0.25)]),
        _bar(-shoulders + 0.05, -0.45, -shoulders - 0.25, 0.15, 0.28),
        _bar(shoulders - 0.05, -0.45, shoulders + 0.25, 0.15, 0.28),
        _rect(-0.3, 0.2, -0.04, 1.0),
        _rect(0.04, 0.2, 0.3, 1.0),
    ]


def pottedplant(rng: np.random.Generator) -> list[Polygon]:
    tips = int(rng.integers(6, 9))
    return [
        np.array([(-0.45, 0.35), (0.45, 0.35), (0.32, 1.0), (-0.32, 1.0)]),
        _star(0.0, -0.25, 0.75, 0.42, tips, turn=rng.uniform(0, math.pi)),
    ]


def sheep(rng: np.random.Generator) -> list[Polygon]:
    puff = rng.uniform(0.28, 0.34)
    polygons = [_ellipse(0.0, -0.05, 0.7, 0.4)]
    for angle in np.linspace(0, 2 * math.pi, 9, endpoint=False):
        polygons.append(_ellipse(0.62 * math.cos(angle), -0.05 + 0.38 * math.sin(angle), puff, puff))
    polygons += [_rect(-0.55, 0.3, -0.27, 0.9), _rect(0.27, 0.3, 0.55, 0.9), _ellipse(0.95, -0.2, 0.24, 0.2)]
    return polygons


def sofa(rng: np.random.Generator) -> list[Polygon]:
    arm = rng.uniform(0.2, 0.3)
    return [
        _rect(-1.0, 0.05, 1.0, 0.55),
        _rect(-1.0, -0.35, -1.0 + arm, 0.55),
        _rect(1.0 - arm, -0.35, 1.0, 0.55),
        _rect(-0.9, -0.7, 0.9, 0.1),
    ]


def train(rng: np.random.Generator) -> list[Polygon]:
    teeth = int(rng.integers(4, 7))
    xs = np.linspace(-1.0, 0.55, 2 * teeth + 1)
    top = [(x, -0.5 if i % 2 == 0 else -0.38) for i, x in enumerate(xs)]
    body = np.array(top + [(1.0, -0.1), (1.0, 0.4), (-1.0, 0.4)])
    return [body, _rect(-0.95, 0.4, 0.95, 0.55)]


def tvmonitor(rng: np.random.Generator) -> list[Polygon]:
    aspect = rng.uniform(0.55, 0.7)
    return [
        _rect(-1.0, -aspect, 1.0, aspect * 0.8),
        np.array([(-0.15, aspect * 0.8), (0.15, aspect * 0.8), (0.3, 1.0), (-0.3, 1.0)]),
    ]


SHAPES: tuple[ShapeFn, ...] = (
    aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow,
    diningtable, dog, horse, motorbike, person, pottedplant, sheep, sofa, train, tvmonitor,
)


@dataclass(frozen=True)
class ClassStyle:
    """Appearance of one class: shape family, texture pattern, bright and dark tone hues (OpenCV 0..179)."""

    class_id: int
    shape: ShapeFn
    pattern: str
    hue: int         # the bright tone
    second_hue: int  # the dark tone

    def __post_init__(self) -> None:
        if not 1 <= self.class_id <= 20:
            raise ValueError(f"class_id must be in 1..20, got {self.class_id}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if not (0 <= self.hue < 180 and 0 <= self.second_hue < 180):
            raise ValueError(f"hues must be in 0..179, got {self.hue} and {self.second_hue}")


def _styles() -> tuple[ClassStyle, ...]:
    """Bright hues 18 degrees apart; the dark tone's hue is that of class (11 i + 3) mod 20.

    That permutation has no fixed point and no swapped pair (no two classes are each
    other's tones reversed), puts the dark tones of hue neighbours 162 degrees apart, and
    keeps classes that share a pattern (i, i+5, ...) at least 36 degrees apart in both tones.
    """
    styles = []
    for index in range(20):
        second = (11 * index + 3) % 20
        styles.append(ClassStyle(class_id=index + 1, shape=SHAPES[index], pattern=PATTERNS[index % 5],
                                 hue=index * 9, second_hue=second * 9))
    return tuple(styles)


STYLES: tuple[ClassStyle, ...] = _styles()


def _hsv_to_bgr(hue: float, saturation: float, value: float) -> np.ndarray:
    pixel = np.array([[[hue % 180, np.clip(saturation, 0, 255), np.clip(value, 0, 255)]]], dtype=np.uint8)
    return cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray, period: float, rng: np.random.Generator) -> np.ndarray:
    """Float map in [0, 1] (1 = first tone) of a texture in object-local pixel coordinates u, v."""
    phase = rng.uniform(0, 2 * math.pi)
    if pattern == "stripes":
        wave = np.sin(2 * math.pi * u / period + phase)
    elif pattern == "checker":
        wave = np.sin(2 * math.pi * u / period + phase) * np.sin(2 * math.pi * v / period)
    elif pattern == "dots":
        cell_u = np.mod(u, period) - period / 2
        cell_v = np.mod(v, period) - period / 2
        wave = (period * 0.3) ** 2 - (cell_u ** 2 + cell_v ** 2)
    elif pattern == "rings":
        wave = np.sin(2 * math.pi * np.hypot(u, v) / period + phase)
    elif pattern == "waves":
        wave = np.sin(2 * math.pi * (u + 0.35 * period * np.sin(2 * math.pi * v / (1.7 * period))) / period + phase)
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    # A soft step keeps tone edges slightly anti-aliased, like a photographed texture.
    return np.clip(0.5 + 2.0 * wave / (np.abs(wave).max() + 1e-6), 0.0, 1.0)


def paint_texture(style: ClassStyle, u: np.ndarray, v: np.ndarray, period: float,
                  rng: np.random.Generator) -> np.ndarray:
    """HxWx3 float32 BGR texture of a class, with hue/brightness jitter and a shading gradient."""
    jitter = rng.uniform(-3, 3)
    saturation = rng.uniform(200, 255)
    value = rng.uniform(190, 250)
    first = _hsv_to_bgr(style.hue + jitter, saturation, value)
    second = _hsv_to_bgr(style.second_hue + jitter, saturation, value * 0.55)
    tone = pattern_mask(style.pattern, u, v, period, rng)[..., None]
    texture = tone * first + (1.0 - tone) * second
    angle = rng.uniform(0, 2 * math.pi)
    extent = max(float(np.abs(u).max()), 1.0)
    shading = 1.0 + 0.12 * (math.cos(angle) * u + math.sin(angle) * v) / extent
    return (texture * shading[..., None]).astype(np.float32)
