"""Following a rank's log.txt as it grows: new complete lines since the last read, and its tail.

Memory stays bounded whatever a rank prints: a line ends at "\n", "\r\n" or a lone "\r"
(progress bars redraw with "\r" and never print "\n"), and a line longer than
MAX_LINE_BYTES is handed over in pieces of that size instead of being held until its end.
"""
from __future__ import annotations

import re
from collections import deque
from pathlib import Path

MAX_LINE_BYTES = 64 * 1024
READ_BYTES = 1 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")


class LogFollower:
    """Reads lines appended to ``path`` after ``start_offset`` (the file may not exist yet)."""

    def __init__(self, path: Path, start_offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = start_offset
        self._partial = b""
        self.at_end = True  # the last read reached the end of the file (as it was then)

    @classmethod
    def from_end(cls, path: Path) -> "LogFollower":
        """Follow only what is written from now on (a restart appends to the same log)."""
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = 0
        return cls(path, size)

    def read_lines(self, max_bytes: int = READ_BYTES) -> list[str]:
        """Complete lines appended since the last call, from at most max_bytes of new data.

        ``at_end`` says whether that reached the end of the file; read again until it
        does to see everything (each call holds at most max_bytes).
        """
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(max_bytes)
        except OSError:
            self.at_end = True
            return []
        self.at_end = len(chunk) < max_bytes
        if not chunk:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        if data.endswith(b"\r"):  # maybe the first half of "\r\n": decide on the next read
            data, hold = data[:-1], b"\r"
        else:
            hold = b""
        *complete, partial = _LINE_END.split(data)
        while len(partial) > MAX_LINE_BYTES:
            complete.append(partial[:MAX_LINE_BYTES])
            partial = partial[MAX_LINE_BYTES:]
        self._partial = partial + hold
        return [line.decode("utf-8", errors="replace") for line in complete]

    def read_to_end(self, max_bytes: int = READ_BYTES):
        """Everything appended up to the end of the file, one bounded batch of lines at a time.

        For the last look at a rank's log when the job ends: the console sees the whole
        tail however much a fast rank wrote, and never holds more than max_bytes of it.
        """
        while True:
            lines = self.read_lines(max_bytes)
            if lines:
                yield lines
            if self.at_end:
                return


def tail_lines(path: Path, lines: int = 20, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of a file ('' when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(deque(text.splitlines(), maxlen=lines))
