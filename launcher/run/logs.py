"""Following a rank's log.txt as it grows: new complete lines since the last read, and its tail."""
from __future__ import annotations

from collections import deque
from pathlib import Path


class LogFollower:
    """Reads lines appended to ``path`` after ``start_offset`` (the file may not exist yet)."""

    def __init__(self, path: Path, start_offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = start_offset
        self._partial = b""

    @classmethod
    def from_end(cls, path: Path) -> "LogFollower":
        """Follow only what is written from now on (a restart appends to the same log)."""
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = 0
        return cls(path, size)

    def read_lines(self, max_bytes: int = 1 << 20) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(max_bytes)
        except OSError:
            return []
        if not chunk:
            return []
        self.offset += len(chunk)
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        return [line.rstrip(b"\r").decode("utf-8", errors="replace") for line in complete]


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
