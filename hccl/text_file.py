"""Read a whole text file, turning every way it can fail into one HcclError line naming it."""
from __future__ import annotations

import os
import stat

from hccl.errors import HcclError

# hccn.conf and rank tables are kilobytes; a table for thousands of servers is a few MB.
MAX_BYTES = 64 << 20


def kind_of(mode: int) -> str:
    """A stat mode in words, for error lines."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"), (stat.S_ISLNK, "symbolic link"),
                       (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def read_text(path: "os.PathLike[str] | str", kind: str) -> str:
    """The file's UTF-8 text; ``kind`` (e.g. "rank table") words the not-a-file errors.

    The type is checked before the file is opened, and the open is non-blocking: a FIFO
    or device named as a rank table would otherwise wait (or read) forever.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise HcclError(f"{path}: is a directory, not {kind}")
        if not stat.S_ISREG(mode):
            raise HcclError(f"{path}: is a {kind_of(mode)}, not {kind}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as source:
            mode = os.fstat(source.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise HcclError(f"{path}: is a {kind_of(mode)}, not {kind}")
            data = source.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise HcclError(f"{path}: larger than {MAX_BYTES >> 20} MiB, not {kind}")
        return data.decode("utf-8")
    except FileNotFoundError:
        raise HcclError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HcclError(f"{path}: is a directory, not {kind}") from None
    except UnicodeDecodeError as err:
        raise HcclError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise HcclError(f"{path}: cannot read ({err.strerror or err})") from None
