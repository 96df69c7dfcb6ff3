"""Read JSON that someone else wrote (job.json, eval.json) so that every bad file is one line.

`json.loads` alone lets hostile or broken input through as something other than a
clean error: `1e400` becomes infinity (and `int()` of it an OverflowError later),
`NaN` / `Infinity` literals are accepted, a 5000-digit integer raises a ValueError from
deep inside with advice about `sys.set_int_max_str_digits`, `[[[[...` a RecursionError,
and bytes that are not UTF-8 a UnicodeDecodeError. And `open()` of a FIFO waits for a
writer forever. Here each becomes a JsonInputError whose message says what is wrong
(the caller prefixes the file name).
"""
from __future__ import annotations

import json
import os
from typing import Any

from hccl import strict_json
from hccl.text_file import NotARegularFile, kind_of, read_regular_bytes

# Enough for any count, id, port, byte size or nanosecond time stamp the project writes.
MAX_INT_DIGITS = 30
# A job.json of thousands of ranks is a few MB; anything far beyond is not one.
MAX_FILE_BYTES = 64 << 20


# What a stat mode is, in words for an error line: the same words as hccl's file errors.
file_kind = kind_of


class JsonInputError(ValueError):
    """The document cannot be used; the message is the reason, without the file name."""


def loads(text: str | bytes) -> Any:
    """Decode a JSON document; JsonInputError with the reason on anything unusable."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonInputError(f"not UTF-8 text (byte {err.start} is 0x{err.object[err.start]:02x}); is it binary?") from None
    try:
        return strict_json.loads(text, MAX_INT_DIGITS)
    except strict_json.StrictJsonError as err:
        raise JsonInputError(str(err)) from None
    except json.JSONDecodeError as err:
        raise JsonInputError(f"not valid JSON (line {err.lineno} column {err.colno}: {err.msg})") from None
    except RecursionError:
        raise JsonInputError("nested too deeply to be a document of this kind") from None
    except ValueError as err:  # int() limits and the like, raised from inside the decoder
        raise JsonInputError(f"not valid JSON ({err})") from None


def read_regular_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> bytes:
    """hccl's non-blocking read of a regular file (hccl.text_file.read_regular_bytes).

    OSError for what the file system says; JsonInputError for the wrong kind or size.
    """
    try:
        return read_regular_bytes(path, limit)
    except NotARegularFile as err:
        raise JsonInputError(f"{err}; not a document of this kind" if err.too_large
                             else f"{err}, not a regular file") from None


def load_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> Any:
    """read_regular_file() + loads()."""
    return loads(read_regular_file(path, limit))
