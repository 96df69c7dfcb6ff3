"""Fit mapped weights onto a model's parameters: check every shape, say what loads and what does not.

Pure: works on names, shapes and numpy arrays. The result is what the commands report:
which parameters come from the checkpoint, which of the checkpoint's weights were left out
and why, and which of the model's parameters the checkpoint does not provide (freshly
initialised when training starts; refused by evaluation, inference and export).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from deeplab.convert.errors import ConversionError
from deeplab.convert.layout import Mapped

CLASSIFIER_PREFIX = "head.classifier."


@dataclass(frozen=True)
class Conversion:
    """The weights to load into a model, and the account of everything else."""

    layout: str
    weights: Mapping[str, np.ndarray]              # model name -> value, shapes checked
    skipped: tuple[tuple[str, str], ...]           # (checkpoint name, why it is not loaded)
    fresh: tuple[str, ...]                         # model parameters the checkpoint does not provide
    ignored: int                                   # checkpoint entries that are not weights
    model_size: int                                # parameters of the model
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.weights) + len(self.fresh) != self.model_size:
            raise ValueError(f"{len(self.weights)} loaded + {len(self.fresh)} fresh parameters "
                             f"must make the model's {self.model_size}")

    @property
    def complete(self) -> bool:
        return not self.fresh

    def summary(self) -> list[str]:
        """The lines the commands print (first line: the count)."""
        lines = [f"layout {self.layout}: {len(self.weights)} of {self.model_size} model parameters loaded"]
        by_reason: dict[str, list[str]] = {}
        for name, why in self.skipped:
            by_reason.setdefault(why, []).append(name)
        for why, names in by_reason.items():
            lines.append(f"  skipped {len(names)} ({why}): {_sample(sorted(names))}")
        if self.fresh:
            lines.append(f"  not in the checkpoint ({len(self.fresh)}, freshly initialised): "
                         f"{_sample(self.fresh)}")
        if self.ignored:
            lines.append(f"  ignored {self.ignored} entries that are not weights (optimizer state, counters)")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines


def _sample(names, count: int = 3) -> str:
    shown = ", ".join(list(names)[:count])
    return shown + (f", ... ({len(names) - count} more)" if len(names) > count else "")


def fit(mapped: Mapped, model_shapes: Mapping[str, tuple[int, ...]]) -> Conversion:
    """Check ``mapped`` against the model's ``{name: shape}``; ConversionError names the first misfit.

    A classifier with another class count is skipped (the model's stays fresh); any other
    shape difference, or a checkpoint weight the model does not have, is refused.
    """
    weights: dict[str, np.ndarray] = {}
    skipped = list(mapped.dropped)
    for ours, value in mapped.weights.items():
        source = mapped.source_names[ours]
        if ours not in model_shapes:
            raise ConversionError(f"{source} (as {ours}) is not a parameter of this model "
                                  "(another backbone or head than the config's?)")
        shape = tuple(model_shapes[ours])
        if tuple(value.shape) != shape:
            if ours.startswith(CLASSIFIER_PREFIX) and tuple(value.shape[1:]) == shape[1:]:
                skipped.append((source, f"classifier for {value.shape[0]} classes, this model has {shape[0]}"))
                continue
            raise ConversionError(f"{source} (as {ours}) has shape {tuple(value.shape)}, this model's is {shape}")
        _check_values(source, value)
        weights[ours] = value
    fresh = tuple(name for name in model_shapes if name not in weights)
    return Conversion(layout=mapped.layout, weights=weights, skipped=tuple(skipped), fresh=fresh,
                      ignored=len(mapped.ignored), model_size=len(model_shapes), notes=mapped.notes)


def _check_values(source: str, value: np.ndarray) -> None:
    """A weight is floating point and finite: integer weights or NaN/inf load without error and
    evaluate to a normal-looking but meaningless mIoU."""
    if value.dtype.kind != "f":
        raise ConversionError(f"{source} is {value.dtype}; model weights must be floating point")
    if not np.isfinite(value).all():
        bad = int(value.size - np.count_nonzero(np.isfinite(value)))
        raise ConversionError(f"{source} holds {bad} NaN or infinite value(s) of {value.size}; "
                              "the checkpoint comes from a diverged or damaged run")


def require_complete(conversion: Conversion, what: str) -> None:
    """Evaluation, inference and export need every parameter from the checkpoint."""
    if conversion.fresh:
        classifier = [why for name, why in conversion.skipped if "classifier for" in why]
        reason = f" ({classifier[0]}; set seg_num_classes?)" if classifier else " (trained with another config?)"
        raise ConversionError(f"lacks {len(conversion.fresh)} parameter(s) of this model, e.g. "
                              f"{conversion.fresh[0]}{reason}; layout {conversion.layout}")
