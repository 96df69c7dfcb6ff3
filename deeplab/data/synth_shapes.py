"""What each synthetic class looks like: a shape family and a two-tone texture.

Every VOC class 1..20 gets its own silhouette built from a few polygons (a plane has
wings and a tail, a bicycle two rings and a frame, a person a head, torso and legs...)
with random proportions, and its own appearance: a hue, a saturation level and a
texture pattern. Hues are 18 degrees apart and the five patterns are assigned so that
classes sharing a pattern are 90 degrees apart in hue; backgrounds are nearly grey. A
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
        _rect(-1.0, -0.13, 0.95, 0.13),
        np.array([(0.95, -0.13), (1.1, 0.0), (0.95, 0.13)]),
        np.array([(-0.15, 0.0), (0.25, 0.0), (0.05 - sweep, span), (-0.2 - sweep, span)]),
        np.array([(-0.15, 0.0), (0.25, 0.0), (0.05 - sweep, -span), (-0.2 - sweep, -span)]),
        np.array([(-1.0, 0.0), (-0.75, 0.0), (-0.9, -0.45), (-1.05, -0.45)]),
    ]


def bicycle(rng: np.random.Generator) -> list[Polygon]:
    wheel = rng.uniform(0.36, 0.45)
    width = 0.1
    return [
        _ring(-0.55, 0.35, wheel, wheel * 0.62),
        _ring(0.55, 0.35, wheel, wheel * 0.62),
        _bar(-0.55, 0.35, -0.05, -0.3, width),
        _bar(-0.05, -0.3, 0.55, 0.35, width),
        _bar(-0.05, -0.3, 0.4, -0.35, width),
        _bar(-0.55, 0.35, 0.05, 0.35, width),
        _rect(-0.2, -0.45, 0.05, -0.33),
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
        _rect(-0.12, -0.95, 0.12, -0.3),
        _rect(-0.16, -1.0, 0.16, -0.88),
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
        _rect(-0.65, 0.0, 0.6, 0.2),
        _rect(-0.65, -back, -0.45, 0.2),
        _rect(-0.65, 0.2, -0.48, 1.0),
        _rect(0.43, 0.2, 0.6, 1.0),
        _bar(-0.55, -back * 0.5, 0.0, -back * 0.5, 0.12),
    ]


def cow(rng: np.random.Generator) -> list[Polygon]:
    leg = rng.uniform(0.75, 0.9)
    return [
        _rect(-0.9, -0.45, 0.55, 0.25),
        np.array([(0.5, -0.45), (1.0, -0.65), (1.05, -0.2), (0.55, -0.05)]),
        np.array([(0.7, -0.62), (0.75, -0.9), (0.85, -0.6)]),
        _rect(-0.85, 0.2, -0.65, leg),
        _rect(-0.5, 0.2, -0.3, leg),
        _rect(0.1, 0.2, 0.3, leg),
        _rect(0.35, 0.2, 0.52, leg),
    ]


def diningtable(rng: np.random.Generator) -> list[Polygon]:
    top = rng.uniform(0.2, 0.3)
    return [
        np.array([(-1.0, -0.3), (1.0, -0.3), (0.85, -0.3 - top), (-0.85, -0.3 - top)]),
        _rect(-1.0, -0.3, 1.0, -0.12),
        _rect(-0.9, -0.12, -0.72, 0.85),
        _rect(0.72, -0.12, 0.9, 0.85),
        _rect(-0.35, -0.12, -0.2, 0.6),
    ]


def dog(rng: np.random.Generator) -> list[Polygon]:
    tail = rng.uniform(-0.9, -0.5)
    return [
        _ellipse(-0.1, 0.0, 0.7, 0.32),
        _ellipse(0.72, -0.35, 0.3, 0.26),
        np.array([(0.62, -0.55), (0.5, -0.95), (0.8, -0.6)]),
        _bar(-0.75, -0.1, -1.0, tail, 0.14),
        _rect(-0.65, 0.15, -0.48, 0.75),
        _rect(0.3, 0.15, 0.47, 0.75),
    ]


def horse(rng: np.random.Generator) -> list[Polygon]:
    neck = rng.uniform(0.8, 1.0)
    return [
        _ellipse(-0.2, -0.05, 0.7, 0.3),
        np.array([(0.25, -0.25), (0.5, -0.1), (0.85, -neck), (0.6, -neck)]),
        np.array([(0.6, -neck), (1.05, -neck + 0.15), (1.05, -neck + 0.35), (0.8, -neck + 0.3)]),
        _rect(-0.75, 0.1, -0.6, 1.0),
        _rect(-0.5, 0.1, -0.35, 1.0),
        _rect(0.1, 0.1, 0.25, 1.0),
        _rect(0.3, 0.1, 0.45, 1.0),
        _bar(-0.85, -0.15, -1.05, 0.5, 0.12),
    ]


def motorbike(rng: np.random.Generator) -> list[Polygon]:
    wheel = rng.uniform(0.32, 0.4)
    return [
        _ellipse(-0.62, 0.4, wheel, wheel),
        _ellipse(0.62, 0.4, wheel, wheel),
        np.array([(-0.6, 0.35), (0.55, 0.35), (0.45, -0.2), (-0.1, -0.3), (-0.55, -0.1)]),
        _bar(0.45, -0.2, 0.62, -0.65, 0.12),
        _bar(0.5, -0.65, 0.85, -0.7, 0.1),
    ]


def person(rng: np.random.Generator) -> list[Polygon]:
    shoulders = rng.uniform(0.35, 0.5)
    return [
        _ellipse(0.0, -0.78, 0.22, 0.24),
        np.array([(-shoulders, -0.52), (shoulders, -0.52), (0.3, 0.25), (-0.3, 0.25)]),
        _bar(-shoulders + 0.05, -0.45, -shoulders - 0.25, 0.15, 0.14),
        _bar(shoulders - 0.05, -0.45, shoulders + 0.25, 0.15, 0.14),
        _rect(-0.28, 0.2, -0.06, 1.0),
        _rect(0.06, 0.2, 0.28, 1.0),
    ]


def pottedplant(rng: np.random.Generator) -> list[Polygon]:
    tips = int(rng.integers(6, 9))
    return [
        np.array([(-0.45, 0.35), (0.45, 0.35), (0.32, 1.0), (-0.32, 1.0)]),
        _star(0.0, -0.25, 0.75, 0.3, tips, turn=rng.uniform(0, math.pi)),
    ]


def sheep(rng: np.random.Generator) -> list[Polygon]:
    puff = rng.uniform(0.28, 0.34)
    polygons = [_ellipse(0.0, -0.05, 0.7, 0.4)]
    for angle in np.linspace(0, 2 * math.pi, 9, endpoint=False):
        polygons.append(_ellipse(0.62 * math.cos(angle), -0.05 + 0.38 * math.sin(angle), puff, puff))
    polygons += [_rect(-0.5, 0.3, -0.35, 0.9), _rect(0.35, 0.3, 0.5, 0.9), _ellipse(0.95, -0.2, 0.2, 0.16)]
    return polygons


def sofa(rng: np.random.Generator) -> list[Polygon]:
    arm = rng.uniform(0.2, 0.3)
    return [
        _rect(-1.0, 0.05, 1.0, 0.55),
        _rect(-1.0, -0.35, -1.0 + arm, 0.55),
        _rect(1.0 - arm, -0.35, 1.0, 0.55),
        _rect(-0.9, -0.7, 0.9, 0.1),
        _rect(-0.95, 0.55, -0.8, 0.7),
        _rect(0.8, 0.55, 0.95, 0.7),
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
    """Appearance of one class: shape family, hue (OpenCV 0..179), saturation, texture pattern."""

    class_id: int
    shape: ShapeFn
    hue: int
    saturation: int
    pattern: str
    dark_complement: bool  # second tone: the complementary hue (True) or a dark shade of the hue

    def __post_init__(self) -> None:
        if not 1 <= self.class_id <= 20:
            raise ValueError(f"class_id must be in 1..20, got {self.class_id}")
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")


def _styles() -> tuple[ClassStyle, ...]:
    styles = []
    for class_id in range(1, 21):
        group, pattern_index = divmod(class_id - 1, 5)
        hue_degrees = group * 90 + pattern_index * 18
        styles.append(ClassStyle(
            class_id=class_id,
            shape=SHAPES[class_id - 1],
            hue=hue_degrees // 2,
            saturation=235 if group % 2 == 0 else 170,
            pattern=PATTERNS[pattern_index],
            dark_complement=group >= 2,
        ))
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
    hue = style.hue + rng.uniform(-3, 3)
    saturation = style.saturation + rng.uniform(-20, 15)
    value = rng.uniform(185, 250)
    first = _hsv_to_bgr(hue, saturation, value)
    if style.dark_complement:
        second = _hsv_to_bgr(hue + 90, saturation, value * 0.55)
    else:
        second = _hsv_to_bgr(hue, saturation, value * 0.4)
    tone = pattern_mask(style.pattern, u, v, period, rng)[..., None]
    texture = tone * first + (1.0 - tone) * second
    angle = rng.uniform(0, 2 * math.pi)
    extent = max(float(np.abs(u).max()), 1.0)
    shading = 1.0 + 0.12 * (math.cos(angle) * u + math.sin(angle) * v) / extent
    return (texture * shading[..., None]).astype(np.float32)
