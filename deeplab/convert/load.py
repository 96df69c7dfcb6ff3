"""Load any known checkpoint layout into a built network (the effects side of deeplab.convert).

Every deeplab command that takes weights goes through :func:`load_weights`: deeplab-eval,
deeplab-infer and deeplab-export (``--ckpt``, every parameter required), deeplab-train's
``ckpt_pre_trained`` (missing parameters stay freshly initialised) and deeplab-convert.
"""
from __future__ import annotations

from pathlib import Path

from deeplab.convert.errors import ConversionError
from deeplab.convert.fit import Conversion, fit, require_complete
from deeplab.convert.recognise import recognise
from deeplab.convert.sources import read_weights


def model_shapes(network) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the network's parameters, named relative to the network itself."""
    return {name: tuple(param.shape) for name, param in network.parameters_and_names()}


def convert_file(path: Path, shapes: dict[str, tuple[int, ...]], complete: bool, what: str = "checkpoint"
                 ) -> Conversion:
    """Read, recognise, map and fit; ConversionError (one line naming ``what`` and the file) on any misfit."""
    source = read_weights(path)
    try:
        conversion = fit(recognise(source).map(source), shapes)
        if complete:
            require_complete(conversion, what)
    except ConversionError as err:
        raise ConversionError(f"{what} {path}: {err}") from None
    return conversion


def load_weights(network, path: Path, complete: bool = True, what: str = "checkpoint") -> Conversion:
    """Load ``path`` (any known layout) into ``network``; returns the account of what was loaded."""
    import mindspore as ms

    conversion = convert_file(path, model_shapes(network), complete, what)
    for name, param in network.parameters_and_names():
        if name in conversion.weights:
            param.set_data(ms.Tensor(conversion.weights[name], dtype=param.dtype))
    return conversion
