"""What every checkpoint layout provides: a recogniser and a name mapping onto this project's names.

A layout sees a checkpoint as ``{name: numpy array}`` and returns :class:`Mapped`: the
model weights under the names of this project's bare network (``backbone.layer1.0.conv1.weight``,
``head.aspp.branches.0.0.weight``, ...), the weights it leaves out on purpose with the reason
(an ImageNet classifier, torchvision's extra head convolution) and the entries that are not
model weights (optimizer state, step counters, ``num_batches_tracked``). A name the layout
does not know stops the conversion: a checkpoint that merely resembles a layout is not
half-loaded. Layouts are pure: no file access, no MindSpore.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from deeplab.checkpoints import APPENDED_KEYS
from deeplab.convert.errors import ConversionError

# Entries a MindSpore training checkpoint stores besides the weights (optimizer and loop state), and
# the ones deeplab-train itself appends (step, epoch, and in deeplab-best.ckpt the mIoU): taken from
# deeplab.checkpoints, so a key training writes is always one the loaders know.
_TRAINING_STATE = re.compile(
    r"^(moments|accum|mean_grad|mean_square|moment1|moment2|scale_sense)\.|"
    r"^(learning_rate|global_step|momentum|loss_scale|current_iterator_step|last_overflow_iterator_step|"
    r"epoch_num|step_num|beta1_power|beta2_power|" + "|".join(map(re.escape, APPENDED_KEYS)) + r")$"
)

TRAINING_PREFIX = "network."  # MindSpore training checkpoints save the network inside a loss cell


def is_training_state(name: str) -> bool:
    return bool(_TRAINING_STATE.match(name))


@dataclass(frozen=True)
class Mapped:
    """A checkpoint's weights under this project's names, and what was left out and why."""

    layout: str
    weights: Mapping[str, np.ndarray]
    source_names: Mapping[str, str]              # our name -> the checkpoint's name
    dropped: tuple[tuple[str, str], ...] = ()     # (checkpoint name, reason): weights left out on purpose
    ignored: tuple[str, ...] = ()                 # entries that are not model weights
    notes: tuple[str, ...] = ()                   # what the user should know about this conversion

    def __post_init__(self) -> None:
        if set(self.weights) != set(self.source_names):
            raise ValueError("every mapped weight needs its checkpoint name")


@dataclass(frozen=True)
class Rule:
    """``pattern`` (a full-match regex on the checkpoint name, prefix removed) -> ``replacement``.

    ``replacement`` None drops the weight with ``reason``.
    """

    pattern: str
    replacement: Optional[str]
    reason: str = ""

    def __post_init__(self) -> None:
        if self.replacement is None and not self.reason:
            raise ValueError(f"rule {self.pattern}: a dropped weight needs a reason")


class Layout:
    """One layout: recognised from the checkpoint's names, mapped by ordered rules.

    Subclasses set ``name``, ``description``, ``rules`` and implement :meth:`matches`;
    ``bn_suffixes`` renames batch-norm entries first (torchvision's ``running_mean`` ->
    ``moving_mean`` ...); :meth:`adjust` may change a value (e.g. fold a BN epsilon).
    """

    name: str = ""
    description: str = ""
    rules: Sequence[Rule] = ()
    bn_suffixes: Mapping[str, str] = {}
    notes: tuple[str, ...] = ()
    # Entries that are not weights although they are not training state (torchvision BN counters).
    non_weight_suffixes: tuple[str, ...] = ()

    def matches(self, names: frozenset[str]) -> bool:
        raise NotImplementedError

    def adjust(self, our_name: str, value: np.ndarray) -> np.ndarray:
        return value

    def map(self, source: Mapping[str, np.ndarray]) -> Mapped:
        prefix = common_prefix(source)
        compiled: list[tuple[re.Pattern[str], Rule]] = [(re.compile(rule.pattern), rule) for rule in self.rules]
        bn_modules = self._bn_modules(source, prefix)
        weights: dict[str, np.ndarray] = {}
        sources: dict[str, str] = {}
        dropped, ignored = [], []
        for name, value in source.items():
            if is_training_state(name) or name.endswith(self.non_weight_suffixes):
                ignored.append(name)
                continue
            local = name[len(prefix):]
            local = _rename_bn(local, bn_modules, self.bn_suffixes)
            for pattern, rule in compiled:
                match = pattern.fullmatch(local)
                if match is None:
                    continue
                if rule.replacement is None:
                    dropped.append((name, rule.reason))
                else:
                    ours = match.expand(rule.replacement)
                    if ours in weights:
                        raise ConversionError(f"{name} and {sources[ours]} both map to {ours}")
                    weights[ours] = self.adjust(ours, np.asarray(value))
                    sources[ours] = name
                break
            else:
                raise ConversionError(f"parameter {name!r} is not part of the {self.name} layout "
                                      f"({self.description}); refusing to guess")
        if not weights:
            raise ConversionError(f"no model weights in it (layout {self.name})")
        return Mapped(layout=self.name, weights=weights, source_names=sources, dropped=tuple(dropped),
                      ignored=tuple(ignored), notes=self.notes)

    def _bn_modules(self, source: Mapping[str, np.ndarray], prefix: str) -> frozenset[str]:
        """Modules with running statistics are batch norms (their weight/bias are gamma/beta)."""
        if not self.bn_suffixes:
            return frozenset()
        return frozenset(name[len(prefix):].rpartition(".")[0] for name in source
                         if name.endswith(".running_mean") or name.endswith(".moving_mean"))


def _rename_bn(local: str, bn_modules: frozenset[str], suffixes: Mapping[str, str]) -> str:
    module, _, suffix = local.rpartition(".")
    if module in bn_modules and suffix in suffixes:
        return f"{module}.{suffixes[suffix]}"
    return local


def weight_names(names) -> list[str]:
    return [name for name in names if not is_training_state(name)]


def common_prefix(source) -> str:
    """``network.`` when every weight carries the training-checkpoint prefix, else empty."""
    names = weight_names(source)
    if names and all(name.startswith(TRAINING_PREFIX) for name in names):
        return TRAINING_PREFIX
    return ""


def local_names(names) -> frozenset[str]:
    """Weight names with the training prefix removed (what recognisers look at)."""
    prefix = common_prefix(names)
    return frozenset(name[len(prefix):] for name in weight_names(names))


def any_match(names, pattern: str) -> bool:
    compiled = re.compile(pattern)
    return any(compiled.fullmatch(name) for name in names)

