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


class NotARegularFile(ValueError):
    """What is at the path is not a regular file, or is one over the limit; the message says
    which ("is a FIFO", "larger than 64 MiB") for the caller to finish with what it wanted."""

    def __init__(self, reason: str, too_large: bool = False) -> None:
        super().__init__(reason)
        self.too_large = too_large


def read_regular_bytes(path: "os.PathLike[str] | str", limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file (a symlink to one is fine); never blocks on a FIFO or device.

    The type is checked before opening (open() of a FIFO would wait for a writer) and again
    on the open descriptor, so a file swapped for a FIFO in between is caught too; at most
    ``limit`` bytes are read. NotARegularFile for the wrong kind or size, OSError for what
    the file system says.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"is a {kind_of(mode)}")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as source:
        mode = os.fstat(source.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(f"is a {kind_of(mode)}")
        data = source.read(limit + 1)
    if len(data) > limit:
        raise NotARegularFile(f"larger than {limit >> 20} MiB", too_large=True)
    return data


def read_text(path: "os.PathLike[str] | str", kind: str) -> str:
    """The file's UTF-8 text; ``kind`` (e.g. "rank table") words the not-a-file errors."""
    path = os.fspath(path)
    try:
        return read_regular_bytes(path).decode("utf-8")
    except NotARegularFile as err:
        raise HcclError(f"{path}: {err}, not {kind}") from None
    except FileNotFoundError:
        raise HcclError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HcclError(f"{path}: is a directory, not {kind}") from None
    except UnicodeDecodeError as err:
        raise HcclError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise HcclError(f"{path}: cannot read ({err.strerror or err})") from None
