"""Read a weights file into ``{name: numpy array}``: MindSpore .ckpt, .safetensors, PyTorch .pth.

``.ckpt`` goes through deeplab.checkpoints (CRC checked when present); ``.safetensors`` needs
only the ``safetensors`` package (a dependency), so torchvision weights load without PyTorch
once saved that way; ``.pth``/``.pt`` needs PyTorch in this environment and is read with
``weights_only=True`` (tensors only, no code runs). Unknown suffixes are refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from deeplab.convert.errors import ConversionError

SUFFIXES = (".ckpt", ".safetensors", ".pth", ".pt")
# safetensors dtypes numpy has a type for; weights must in the end be floating point (deeplab.convert.fit).
NUMPY_SAFETENSORS_DTYPES = frozenset({"F64", "F32", "F16", "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8",
                                      "BOOL"})
_MAX_SAFETENSORS_HEADER = 100 << 20
TORCH_TO_SAFETENSORS = ("python -c \"import torch, safetensors.torch as st; "
                        "st.save_file(torch.load('IN.pth', weights_only=True), 'OUT.safetensors')\"")


def read_weights(path: Path) -> dict[str, np.ndarray]:
    from deeplab.checkpoints import CheckpointError, check_checkpoint_file

    try:
        path = check_checkpoint_file(Path(path))
    except CheckpointError as err:
        raise ConversionError(str(err)) from None
    suffix = path.suffix.lower()
    if suffix == ".ckpt":
        return _read_mindspore(path)
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in (".pth", ".pt"):
        return _read_torch(path)
    raise ConversionError(f"checkpoint {path}: unknown file type {path.suffix or '(none)'!r}; "
                          f"expected one of {', '.join(SUFFIXES)}")


def _read_mindspore(path: Path) -> dict[str, np.ndarray]:
    import mindspore as ms

    from deeplab.checkpoints import read_checkpoint

    arrays = {}
    for name, param in read_checkpoint(path).items():
        if param.dtype == ms.bfloat16:
            param = param.astype(ms.float32)  # exact: a bfloat16 is the upper half of a float32; numpy has none
        try:
            arrays[name] = param.asnumpy()
        except TypeError:  # another dtype numpy has no type for
            raise ConversionError(f"checkpoint {path}: {name[:80]!r} is {param.dtype}, which cannot be read "
                                  "here; save the weights as float32") from None
    return arrays


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    _check_safetensors_dtypes(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ConversionError(f"checkpoint {path}: not a readable safetensors file ({err})") from None
    if not tensors:
        raise ConversionError(f"checkpoint {path}: contains no tensors")
    return dict(tensors)


def _check_safetensors_dtypes(path: Path) -> None:
    """Refuse, in one line, the dtypes numpy has no type for (BF16, F8_*): safetensors would raise
    TypeError or AttributeError deep inside. The header is an 8-byte length and JSON (its format)."""
    try:
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8), "little")
            if not 2 <= length <= _MAX_SAFETENSORS_HEADER:
                return  # not a safetensors header; load_file says so
            header = json.loads(handle.read(length))
    except (OSError, ValueError, RecursionError):
        return  # load_file reads it again and says what is wrong
    if not isinstance(header, dict):
        return
    for name, entry in header.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if isinstance(dtype, str) and dtype not in NUMPY_SAFETENSORS_DTYPES:
            raise ConversionError(f"checkpoint {path}: tensor {name[:80]!r} is {dtype[:20]}, which cannot be read "
                                  "here; save the weights as float32 (F32)")


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConversionError(f"checkpoint {path}: reading .pth needs PyTorch, which is not installed here; "
                              f"convert it to .safetensors where PyTorch is: {TORCH_TO_SAFETENSORS}") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to the user
        raise ConversionError(f"checkpoint {path}: not a readable PyTorch file ({type(err).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise ConversionError(f"checkpoint {path}: holds no state dict")
    return {name: value.detach().cpu().numpy() for name, value in state.items() if hasattr(value, "detach")}
