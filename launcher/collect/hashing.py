"""SHA-256 of checkpoints, with a cache so a file is read at most once per version.

Hashing is the slow part of collecting: hard-linking 8 GiB of checkpoints takes
milliseconds, reading them takes seconds. Collecting the same job again (``--into``),
or a checkpoint that was already hashed when copied, must not pay that again. The cache
key is (device, inode, size, mtime_ns): a hard link shares the inode with its source, and
checkpoints are written atomically (new inode), so a changed file never matches a stale
entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import BinaryIO

from launcher.atomic_write import write_atomic

CHUNK = 4 << 20
# Smaller files are re-read faster than a cache entry is worth keeping.
CACHE_MIN_SIZE = 1 << 20


def file_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def sha256_stream(stream: BinaryIO) -> str:
    digest = hashlib.sha256()
    # hashlib releases the GIL for large updates, so threads hash in parallel.
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as stream:
        return sha256_stream(stream)


def default_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "deeplab-launch" / "sha256-cache.json"


class HashCache:
    """A JSON file mapping file_key -> sha256; missing or unreadable means empty."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, str] = {}
        self._lock = threading.Lock()
        if path is not None:
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self._entries = {str(k): str(v) for k, v in loaded.items()}
            except (OSError, ValueError):
                pass

    def get(self, st: os.stat_result) -> str | None:
        with self._lock:
            return self._entries.get(file_key(st))

    def put(self, st: os.stat_result, digest: str) -> None:
        with self._lock:
            self._entries[file_key(st)] = digest

    def save(self) -> None:
        """Write atomically; a cache that cannot be written only costs speed next time."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock:
                data = json.dumps(self._entries)
            write_atomic(self.path, data)
        except OSError:
            pass

    def sha256(self, path: Path) -> tuple[str, bool]:
        """(digest, came_from_cache) of a local file."""
        st = path.stat()
        cached = self.get(st)
        if cached is not None:
            return cached, True
        digest = sha256_file(path)
        if st.st_size >= CACHE_MIN_SIZE:
            self.put(st, digest)
        return digest, False

