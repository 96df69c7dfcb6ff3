"""Which accelerator platform this machine has, which devices it offers, and the default start mode.

Effects are limited to looking at the machine (PATH lookups, ``nvidia-smi -L``, reading
hccn.conf); the rest of the launcher gets the answers as plain values.
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Optional, Sequence

from launcher.errors import LaunchError

PLATFORMS = ("Ascend", "GPU", "CPU")
MODES = ("rank-table", "mpirun", "dynamic")
DEFAULT_HCCN_CONF = Path("/etc/hccn.conf")

_GPU_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)


def gpu_ids() -> tuple[int, ...]:
    """GPU indices ``nvidia-smi -L`` lists; empty when there is no nvidia-smi or it fails."""
    from shutil import which  # here: shutil is ~2 ms of every per-host agent's start, which never looks

    if which("nvidia-smi") is None:
        return ()
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if done.returncode != 0:
        return ()
    return tuple(int(m) for m in _GPU_LINE.findall(done.stdout))


def default_mode(platform: str, *, mpirun_spans_hosts: bool = True, rank_table: bool = True) -> str:
    """The one rule for the start mode when --mode is not given.

    Ascend -> rank-table (dynamic where no rank table can be had), GPU -> mpirun (dynamic where
    one mpirun cannot reach every host: pods), CPU -> dynamic.
    """
    if platform == "Ascend" and rank_table:
        return "rank-table"
    if platform == "GPU" and mpirun_spans_hosts:
        return "mpirun"
    return "dynamic"


def detect_platform(hccn_conf: Path = DEFAULT_HCCN_CONF) -> str:
    """Ascend when ``npu-smi`` or hccn.conf is present, GPU when nvidia-smi lists GPUs, else CPU."""
    from shutil import which

    if which("npu-smi") is not None or Path(hccn_conf).exists():
        return "Ascend"
    if gpu_ids():
        return "GPU"
    return "CPU"


def check_platform(name: str) -> str:
    """Accept the platform name in any case; one line on anything else."""
    for known in PLATFORMS:
        if name.lower() == known.lower():
            return known
    raise LaunchError(f"--platform {name!r}: unknown platform (use Ascend, GPU or CPU)")


def usable_cpus() -> tuple[int, ...]:
    """Core ids this process may run on (respects taskset and cgroup cpusets)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))


def visible_gpu_ids(environ: Optional[dict] = None) -> tuple[int, ...]:
    """GPUs this process may use: nvidia-smi's list, narrowed by CUDA_VISIBLE_DEVICES when set."""
    found = gpu_ids()
    env = os.environ if environ is None else environ
    narrowed = env.get("CUDA_VISIBLE_DEVICES")
    if narrowed is None or not narrowed.strip():
        return found
    try:
        wanted = tuple(int(part) for part in narrowed.split(",") if part.strip())
    except ValueError:
        return found  # UUID-style lists: trust nvidia-smi
    return tuple(d for d in wanted if d in found)


# Far beyond any machine (8 NPUs, 8 GPUs, a few hundred cores), and small enough that a
# typo like 0-99999999999 is an error line, not a multi-GB list.
MAX_DEVICE_ID = 65535
MAX_DEVICES_PER_HOST = 1024


def check_device_count(count: int) -> int:
    """--devices N: 1..MAX_DEVICES_PER_HOST (a launch, a submission and a pod read it alike)."""
    if count < 1:
        raise LaunchError(f"--devices {count}: must be at least 1")
    if count > MAX_DEVICES_PER_HOST:
        raise LaunchError(f"--devices {count}: at most {MAX_DEVICES_PER_HOST} ranks per host")
    return count


def parse_device_list(text: str, flag: str = "--visible-devices") -> tuple[int, ...]:
    """``0,1,4-7`` -> (0, 1, 4, 5, 6, 7); duplicates and negatives are errors."""
    devices: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(r"([0-9]{1,6})(?:-([0-9]{1,6}))?", part)
        if not match:
            raise LaunchError(f"{flag} {text[:80]!r}: expected device ids like 0,1,2 or 0-3 (each 0..{MAX_DEVICE_ID})")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise LaunchError(f"{flag} {text[:80]!r}: range {part} is backwards")
        if high > MAX_DEVICE_ID:
            raise LaunchError(f"{flag} {text[:80]!r}: device id {high} is above {MAX_DEVICE_ID}")
        if len(devices) + high - low + 1 > MAX_DEVICES_PER_HOST:
            raise LaunchError(f"{flag} {text[:80]!r}: more than {MAX_DEVICES_PER_HOST} devices on one host")
        devices.extend(range(low, high + 1))
    if len(set(devices)) != len(devices):
        raise LaunchError(f"{flag} {text!r}: a device is listed twice")
    return tuple(devices)


def choose_devices(
    platform: str,
    count: Optional[int],
    visible: Optional[Sequence[int]],
    available: Sequence[int],
    *,
    source: str,
) -> tuple[int, ...]:
    """Device ids per host from ``--devices N`` / ``--visible-devices``, checked against what exists.

    CPU "devices" are just rank slots (ids 0..N-1): more ranks than cores is allowed (the
    caller warns). On GPU/Ascend every id must be one the machine offers (``source`` says
    where that list came from, for the error line).
    """
    if count is not None:
        check_device_count(count)
    if platform == "CPU":
        if visible is not None:
            return tuple(visible) if count is None or count == len(visible) else _count_mismatch(count, visible)
        return tuple(range(count if count is not None else 1))
    if visible is not None:
        missing = [d for d in visible if d not in available]
        if missing:
            raise LaunchError(
                f"--visible-devices: {platform} device(s) {','.join(map(str, missing))} not available "
                f"({source} lists {_listing(available)})"
            )
        if count is not None and count != len(visible):
            _count_mismatch(count, visible)
        return tuple(visible)
    if not available:
        raise LaunchError(f"--platform {platform}: no {platform} devices found ({source} lists none)")
    if count is None:
        return tuple(available)
    if count > len(available):
        raise LaunchError(
            f"--devices {count}: only {len(available)} {platform} device(s) available ({source} lists "
            f"{_listing(available)})"
        )
    return tuple(available[:count])


def _count_mismatch(count: int, visible: Sequence[int]) -> tuple[int, ...]:
    raise LaunchError(f"--devices {count} disagrees with --visible-devices ({len(visible)} ids); give one of them")


def _listing(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids)) if ids else "none"
