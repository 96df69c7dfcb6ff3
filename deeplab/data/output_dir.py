"""Write a whole output directory under a temporary name, then rename it into place.

Readers (and a crash) see the old directory or the complete new one, never a half-written
one. An existing non-empty directory is replaced only with ``force``, and is moved aside
before the new one takes its name, so it is removed only once the new one is in place.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from deeplab.data.errors import DataError

T = TypeVar("T")


def check_output_dir(out: Path, force: bool) -> None:
    """DataError unless ``out`` may be written: absent, empty, or replaced with ``force``."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: exists and is not empty (use --force to replace it)")


def build_output_dir(out: Path, build: Callable[[Path], T]) -> T:
    """Run ``build(temp_dir)`` beside ``out``, then rename the result to ``out``; returns what build returned."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        result = build(temp)
        _move_into_place(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return result


def _move_into_place(temp: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(temp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / "previous")
    os.replace(temp, out)
    shutil.rmtree(old, ignore_errors=True)
