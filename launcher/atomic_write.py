"""The launcher's one atomic file writer: readers see the old content or the whole new one.

The text goes to a temporary file of its own in the target's directory (same file system;
a unique name, so concurrent writers never share one), is fsync'ed, gets the usual
permissions (0666, or 0777 for scripts, minus the umask; not mkstemp's private 0600) and
is renamed over the target. job.json, every rendered file, collect-results' summaries.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask() can only be read by setting it, which other threads would see.
_UMASK = _read_umask()


def write_atomic(path: Union[str, "os.PathLike[str]"], data: Union[str, bytes], *, executable: bool = False) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically; the directory must exist."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), (0o777 if executable else 0o666) & ~_UMASK)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path
