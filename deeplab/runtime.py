"""Start MindSpore for one deeplab process: CPU tuning first, then import, graph mode, device, threads.

Shared by deeplab-train, deeplab-eval and deeplab-infer so that every entry point applies
``deeplab.cpu_tuning`` before MindSpore is imported (ONEDNN_MAX_CPU_ISA must be in the
environment when the library loads).
"""
from __future__ import annotations

import os
from typing import Mapping

from deeplab import cpu_tuning

DEVICE_TARGETS = ("CPU", "GPU", "Ascend")


def resolve_threads(cfg_threads: int, ranks_on_host: int = 1, environ: Mapping[str, str] = os.environ) -> int:
    """CPU threads: cfg.threads when > 0, else OMP_NUM_THREADS (set per rank by launch-train),
    else the usable cores divided by the ranks sharing this host."""
    if cfg_threads > 0:
        return cfg_threads
    from_env = environ.get("OMP_NUM_THREADS", "").strip()
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    return cpu_tuning.resolve_threads(0, ranks_on_host)


def start_mindspore(device_target: str, threads: int, seed: int | None = None):
    """Apply the CPU environment, import MindSpore and configure it; returns the ``mindspore`` module."""
    if device_target not in DEVICE_TARGETS:
        raise ValueError(f"device target must be one of {DEVICE_TARGETS}, got {device_target!r}")
    cpu_tuning.apply_to_environ(threads)
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device(device_target)
    if device_target == "CPU":
        cpu_tuning.set_mindspore_threads(threads)
    if seed is not None:
        ms.set_seed(seed)
    return ms
