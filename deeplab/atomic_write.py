"""The one way deeplab writes a file: readers see the old content or the complete new one, never a part.

Two shapes, one procedure (the temporary lives in the target's directory, so the final
rename is on one file system; it is fsync'ed, renamed over the target, and the directory
entry is fsync'ed):

* :func:`write_bytes_atomically` -- bytes we have in memory (eval.json, masks, YAML);
* :func:`staged_file` -- a file a library writes itself at a path we give it
  (``mindspore.save_checkpoint``, ``mindspore.export``): the path is inside a hidden
  staging directory next to the target, removed whatever happens.

Files get the usual permissions (0666 minus the umask), not mkstemp's private 0600.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: "os.PathLike[str] | str", directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomically(path: "os.PathLike[str] | str", data: bytes) -> Path:
    path = Path(path)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_current_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    fsync_path(path.resolve().parent, directory=True)
    return path


@contextlib.contextmanager
def staged_file(final: "os.PathLike[str] | str", staging_name: Optional[str] = None) -> Iterator[Path]:
    """Yield a path to write ``final``'s new content at; on a clean exit it replaces ``final``.

    ``staging_name`` names the hidden directory next to ``final`` (default: a fresh
    ``.<name>.*`` one), for callers that sweep what a killed writer left behind.
    A body that raises, or writes nothing, leaves ``final`` as it was.
    """
    final = Path(final)
    if staging_name is None:
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    else:
        staging = final.parent / staging_name
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    try:
        written = staging / final.name
        yield written
        if not written.is_file():
            raise RuntimeError(f"nothing was written for {final}")
        fsync_path(written)
        os.replace(written, final)
        fsync_path(final.parent, directory=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
