"""Where a host's job files come from: this machine's file system, or SFTP.

One small interface, two implementations, so gathering has no `if remote:` branches:
`walk()` lists the regular files under a directory of the host's job dir and `fetch()`
puts one of them into the results tree and says how (hard link, local copy, SFTP copy)
and with which sha256.
"""
from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import shutil
import stat
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.collect.hashing import CHUNK, HashCache

# Files that running processes append to in place: a hard link would keep changing
# after collection, so these are always copied (a snapshot). Everything else --
# checkpoints above all, which the trainer writes to a temp name and renames -- is
# hard-linked when source and results share a file system.
APPENDED_IN_PLACE = (".txt", ".log", ".out", ".err")


@dataclass(frozen=True)
class SourceFile:
    rel: str  # POSIX path relative to the host's job dir, e.g. "LOG0/ckpt/a.ckpt"
    size: int
    mtime: float


@dataclass(frozen=True)
class Fetched:
    method: str  # "link" | "copy" | "sftp"
    sha256: str | None  # known when the bytes went through us; None for links (hashed later)


class HostFiles(ABC):
    """A host's job directory, readable file by file."""

    # How many files fetch() may be called on at once: local copies are bound by hashing
    # and copying on the CPU, so one per core; one SFTP session is used by one thread.
    parallel_fetches = 1

    def __init__(self, root: str) -> None:
        self.root = root

    @abstractmethod
    def walk(self, rel_dir: str) -> list[SourceFile]:
        """Regular files under rel_dir, recursively; FileNotFoundError if rel_dir is absent."""

    @abstractmethod
    def fetch(self, item: SourceFile, dest: Path) -> Fetched:
        """Place item at dest (whose parent exists)."""

    @abstractmethod
    def uri(self, rel: str) -> str:
        """Where the file came from, for the manifest."""

    @abstractmethod
    def walk_file(self, rel: str) -> SourceFile | None:
        """The one regular file rel, or None if it is missing or not a regular file."""

    def close(self) -> None:
        """Release connections; the default holds none."""


# paramiko answers a big read() by joining many prefetched 32 KiB packets, which cost
# more than it saves: reading packet-sized chunks measured 40 -> 63 MB/s on loopback.
SFTP_CHUNK = 32 * 1024


def _copy_hashing(read: Any, dest: Path, chunk_size: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for chunk in iter(lambda: read(chunk_size), b""):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


class LocalFiles(HostFiles):
    parallel_fetches = max(1, os.cpu_count() or 1)

    def __init__(self, root: str, cache: HashCache, allow_links: bool = True) -> None:
        super().__init__(root)
        self.cache = cache
        self.allow_links = allow_links

    def _path(self, rel: str) -> Path:
        return Path(self.root, *rel.split("/"))

    def walk(self, rel_dir: str) -> list[SourceFile]:
        top = self._path(rel_dir)
        if not top.is_dir():
            raise FileNotFoundError(str(top))
        found = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath, name)
                rel = path.relative_to(self.root).as_posix()
                item = self.walk_file(rel)
                if item is not None:
                    found.append(item)
        return found

    def walk_file(self, rel: str) -> SourceFile | None:
        try:
            st = self._path(rel).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return SourceFile(rel, st.st_size, st.st_mtime)

    def fetch(self, item: SourceFile, dest: Path) -> Fetched:
        src = self._path(item.rel)
        if self.allow_links and not item.rel.endswith(APPENDED_IN_PLACE):
            try:
                os.link(src, dest)
                return Fetched("link", None)
            except OSError as err:
                # Other file system, or one without hard links: copy instead.
                if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
        with open(src, "rb") as stream:
            digest = _copy_hashing(stream.read, dest)
        shutil.copystat(src, dest)
        return Fetched("copy", digest)

    def uri(self, rel: str) -> str:
        return str(self._path(rel))


class SftpFiles(HostFiles):
    """A remote host's job dir over an open paramiko SFTPClient."""

    def __init__(self, root: str, sftp: Any, host_uri: str, on_close: Any = None) -> None:
        super().__init__(root)
        self.sftp = sftp
        self.host_uri = host_uri  # e.g. "ssh://user@127.0.0.2:22"
        self._on_close = on_close
        import paramiko  # only here: local collections never pay its import

        self._ssh_exception = paramiko.SSHException

    def _path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def walk(self, rel_dir: str) -> list[SourceFile]:
        found: list[SourceFile] = []
        try:
            entries = self.sftp.listdir_attr(self._path(rel_dir))
        except OSError as err:  # paramiko raises IOError(ENOENT) for a missing dir
            if getattr(err, "errno", None) == errno.ENOENT:
                raise FileNotFoundError(self.uri(rel_dir)) from None
            raise
        for attr in sorted(entries, key=lambda a: a.filename):
            rel = posixpath.join(rel_dir, attr.filename)
            if stat.S_ISDIR(attr.st_mode or 0):
                found.extend(self.walk(rel))
            elif stat.S_ISREG(attr.st_mode or 0):
                found.append(SourceFile(rel, int(attr.st_size or 0), float(attr.st_mtime or 0)))
        return found

    def walk_file(self, rel: str) -> SourceFile | None:
        try:
            attr = self.sftp.stat(self._path(rel))
        except OSError:
            return None
        if not stat.S_ISREG(attr.st_mode or 0):
            return None
        return SourceFile(rel, int(attr.st_size or 0), float(attr.st_mtime or 0))

    def fetch(self, item: SourceFile, dest: Path) -> Fetched:
        try:
            with self.sftp.open(self._path(item.rel), "rb") as remote:
                # Pipelined reads: without prefetch every 32 KiB read is one round trip.
                remote.prefetch(item.size)
                digest = _copy_hashing(remote.read, dest, SFTP_CHUNK)
        except (EOFError, self._ssh_exception) as err:
            # The session died: an OSError for the caller, which keeps what already arrived.
            raise ConnectionError(f"SFTP session lost: {err}") from None
        os.utime(dest, (item.mtime, item.mtime))
        return Fetched("sftp", digest)

    def uri(self, rel: str) -> str:
        return f"{self.host_uri}{self._path(rel)}"

    def close(self) -> None:
        try:
            self.sftp.close()
        finally:
            if self._on_close is not None:
                self._on_close()
