"""Read a whole text file, turning every way it can fail into one HcclError line naming it."""
from __future__ import annotations

import os

from hccl.errors import HcclError


def read_text(path: "os.PathLike[str] | str", kind: str) -> str:
    """The file's UTF-8 text; ``kind`` (e.g. "rank table") words the is-a-directory error."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as source:
            return source.read()
    except FileNotFoundError:
        raise HcclError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HcclError(f"{path}: is a directory, not {kind}") from None
    except UnicodeDecodeError as err:
        raise HcclError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise HcclError(f"{path}: cannot read ({err.strerror or err})") from None
