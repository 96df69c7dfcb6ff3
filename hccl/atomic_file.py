"""Write a file so that readers see either nothing or the whole of it, never overwriting by accident."""
from __future__ import annotations

import errno
import os
import secrets
import stat

from hccl.errors import HcclError
from hccl.text_file import kind_of


def _check_replaceable(path: str) -> None:
    """--force replaces a regular file (or a link to one: the link, not its target), nothing else.

    rename() would happily put a table where a device node, a FIFO or a socket was, and
    remove that entry; a directory or a link to a directory cannot be meant either.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        try:
            target = os.stat(path).st_mode
        except OSError:
            raise HcclError(f"{path}: is a dangling symbolic link; refusing to replace it") from None
        if not stat.S_ISREG(target):
            raise HcclError(f"{path}: is a symbolic link to a {kind_of(target)}; --force replaces only a regular file")
        return
    if not stat.S_ISREG(mode):
        raise HcclError(f"{path}: is a {kind_of(mode)}; --force replaces only a regular file")


def write_text_atomically(path: "os.PathLike[str] | str", text: str, force: bool = False) -> str:
    """Write `text` to a temporary file beside `path`, then move it into place.

    Without `force` an existing `path` is an HcclError and stays untouched (a hard link
    makes the final step fail instead of replacing, so two writers cannot both win).
    Returns the path written. Nothing is left behind on failure.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise HcclError(f"{path}: directory {directory} does not exist")
    if os.path.isdir(path):
        raise HcclError(f"{path}: is a directory")
    if not force and os.path.lexists(path):
        raise HcclError(f"{path}: already exists (use --force to overwrite)")
    if force:
        _check_replaceable(path)
    temp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        # 0o666 under the umask: the same mode open(path, "w") would have given.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if force:
            os.replace(temp, path)
        else:
            _link_without_replacing(temp, path)
    except OSError as err:
        raise HcclError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
    return path


def _link_without_replacing(temp: str, path: str) -> None:
    try:
        os.link(temp, path)
    except FileExistsError:
        raise HcclError(f"{path}: already exists (use --force to overwrite)") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # File systems without hard links: the existence check above is the best we can do.
        os.replace(temp, path)
