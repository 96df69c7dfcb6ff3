"""The CPU environment that makes MindSpore fast on x86 hosts (pure, standard library only).

Shared by the launcher (which renders it into every CPU rank's env.sh, for this host or
a remote one, without importing the training program) and by deeplab (which applies it
to its own environment before ``import mindspore``, for runs started by hand). Neither
imports the other; both import this.

Two facts drive it (measured on this project's machines):

* On AVX-512 CPUs MindSpore's oneDNN picks a reference (non-JIT) kernel for 3x3
  convolutions on plain NCHW tensors, 35x+ slower. ``ONEDNN_MAX_CPU_ISA=AVX2`` restores
  the JIT kernels. It is read once, when the library loads: it must be in the
  environment *before* ``import mindspore``.
* Several processes (ranks) sharing one host must split its cores, or every rank's
  thread pool oversubscribes the CPU.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Optional

CPUINFO_PATH = Path("/proc/cpuinfo")

# Thread-count variables honoured by the native libraries MindSpore and numpy load.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse_cpu_flags(cpuinfo_text: str) -> frozenset[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def read_cpu_flags(path: Path = CPUINFO_PATH) -> frozenset[str]:
    """This host's CPU flags; empty where /proc/cpuinfo does not exist (non-Linux)."""
    try:
        return parse_cpu_flags(Path(path).read_text(errors="replace"))
    except OSError:
        return frozenset()


def has_avx512(cpu_flags: Iterable[str]) -> bool:
    return any(flag.startswith("avx512") for flag in cpu_flags)


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: Optional[int], ranks_on_host: int = 1) -> int:
    """Threads for one rank: ``threads`` when positive, else the host's cores split over its ranks."""
    if ranks_on_host < 1:
        raise ValueError(f"ranks_on_host must be >= 1, got {ranks_on_host}")
    if threads is not None and threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = all cores), got {threads}")
    if threads:
        return threads
    return max(1, available_cores() // ranks_on_host)


def tuned_cpu_env(
    threads: Optional[int] = None,
    cpu_flags: Optional[Iterable[str]] = None,
    *,
    environ: Optional[Mapping[str, str]] = None,
) -> dict[str, str]:
    """Environment variables to set before MindSpore is imported.

    threads: CPU threads for this process; None leaves thread variables alone.
    cpu_flags: the CPU's feature flags; None reads this host's /proc/cpuinfo
        (pass the remote host's flags when rendering for another machine).
    environ: when given, variables already set there are left out, so a value the
        user chose always wins over the tuning.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    flags = read_cpu_flags() if cpu_flags is None else frozenset(cpu_flags)
    env: dict[str, str] = {}
    if has_avx512(flags):
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    if threads is not None:
        for name in THREAD_ENV_VARS:
            env[name] = str(threads)
    if environ is not None:
        env = {key: value for key, value in env.items() if key not in environ}
    return env
