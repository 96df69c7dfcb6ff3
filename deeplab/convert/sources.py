"""Read a weights file into ``{name: numpy array}``: MindSpore .ckpt, .safetensors, PyTorch .pth.

``.ckpt`` goes through deeplab.checkpoints (CRC checked when present); ``.safetensors`` needs
only the ``safetensors`` package (a dependency), so torchvision weights load without PyTorch
once saved that way; ``.pth``/``.pt`` needs PyTorch in this environment and is read with
``weights_only=True`` (tensors only, no code runs). Unknown suffixes are refused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from deeplab.convert.errors import ConversionError

SUFFIXES = (".ckpt", ".safetensors", ".pth", ".pt")
TORCH_TO_SAFETENSORS = ("python -c \"import torch, safetensors.torch as st; "
                        "st.save_file(torch.load('IN.pth', weights_only=True), 'OUT.safetensors')\"")


def read_weights(path: Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path}: no such file")
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
    from deeplab.checkpoints import read_checkpoint

    return {name: param.asnumpy() for name, param in read_checkpoint(path).items()}


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ConversionError(f"checkpoint {path}: not a readable safetensors file ({err})") from None
    if not tensors:
        raise ConversionError(f"checkpoint {path}: contains no tensors")
    return dict(tensors)


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
