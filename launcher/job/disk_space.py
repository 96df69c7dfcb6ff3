"""Disk full, said plainly: which file system, for which path, and a little room kept for job.json.

A rank that fills the disk dies with whatever its program makes of ENOSPC (often only
"[Errno 28]", or nothing, since its own log cannot be written any more). So when a rank
fails, the launcher looks at the file systems of its log and checkpoint directories
and, when one is full, says so with the path. And so that the launcher can still record
how the job ended, a small reserve file is written with the job dir and given back (and
the write retried) when job.json itself meets ENOSPC.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Iterable, Optional

RESERVE_FILE = ".job.json.reserve"
RESERVE_BYTES = 256 * 1024
# Below this much room for an unprivileged writer a file system counts as full.
FULL_BELOW_BYTES = 64 * 1024


def free_bytes(path: Path) -> Optional[int]:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def full_file_system(paths: Iterable[Path]) -> Optional[str]:
    """"the file system of PATH is full (N bytes free)" for the first full one among paths, else None."""
    for path in paths:
        free = free_bytes(path)
        if free is not None and free < FULL_BELOW_BYTES:
            return f"the file system of {path} is full ({free} bytes free: {os.strerror(errno.ENOSPC)})"
    return None


def write_reserve(job_dir: Path) -> None:
    with open(Path(job_dir) / RESERVE_FILE, "wb") as out:
        out.write(b"\0" * RESERVE_BYTES)
        out.flush()
        os.fsync(out.fileno())


def release_reserve(job_dir: Path) -> bool:
    """Give the reserve's room back; True if there was one."""
    try:
        os.unlink(Path(job_dir) / RESERVE_FILE)
        return True
    except FileNotFoundError:
        return False
