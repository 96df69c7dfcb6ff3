"""Where a host's job files come from: this machine's file system, or SFTP.

One small interface, two implementations, so gathering has no `if remote:` branches:
`walk()` lists a directory of the host's job dir (regular files to take, links and
special files skipped -- see listing.py) and `fetch()` puts one file into the results
tree and says how (hard link, local copy, SFTP copy), with its sha256 and size.

A fetch either delivers a verified file or raises and leaves nothing at dest: a copy
is hashed as its bytes go past, then read back from the results tree and compared
(size and sha256), and a file that is not appended to in place must not have changed
while it was read. A truncated transfer can therefore never be mistaken for a file.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import socket
import stat
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from launcher.collect.hashing import CHUNK, HashCache, sha256_file
from launcher.collect.listing import Listing, NotFollowed, NotRegular, Skipped, SourceFile
from launcher.collect.local_tree import (MAX_DEPTH, foreign_hard_link, hard_link_skipped, job_owner, link_same_inode,
                                        list_tree, open_regular, stat_file)
from launcher.job.json_input import file_kind

__all__ = ["APPENDED_IN_PLACE", "CopyMismatch", "Fetched", "HostFiles", "HostLost", "LocalFiles", "SftpFiles",
           "SourceFile"]

# Files that running processes append to in place: a hard link would keep changing
# after collection, so these are always copied (a snapshot), and may grow while read.
# Everything else -- checkpoints above all, which the trainer writes to a temp name and
# renames -- is hard-linked when source and results share a file system.
APPENDED_IN_PLACE = (".txt", ".log", ".out", ".err")


@dataclass(frozen=True)
class Fetched:
    method: str  # "link" | "copy" | "sftp"
    sha256: str | None  # known when the bytes went through us; None for links (hashed later)
    size: int  # bytes now in the results tree


class CopyMismatch(OSError):
    """What arrived is not what the source holds (short, changed while read, or read back different)."""


class HostLost(ConnectionError):
    """The connection to the host died; nothing more can be fetched from it."""


class HostFiles(ABC):
    """A host's job directory, readable file by file."""

    # How many files fetch() may be called on at once: local copies are bound by hashing
    # and copying on the CPU, so one per core; one SFTP session is used by one thread.
    parallel_fetches = 1

    def __init__(self, root: str) -> None:
        self.root = root

    @abstractmethod
    def walk(self, rel_dir: str) -> Listing:
        """Regular files under rel_dir, recursively, and what was skipped.

        FileNotFoundError if rel_dir is absent, NotFollowed if it is a link or not a dir.
        """

    @abstractmethod
    def fetch(self, item: SourceFile, dest: Path) -> Fetched:
        """Place item at dest (whose parent exists), verified; on failure raise and leave no dest."""

    @abstractmethod
    def uri(self, rel: str) -> str:
        """Where the file came from, for the manifest."""

    @abstractmethod
    def walk_file(self, rel: str) -> SourceFile | Skipped | None:
        """The one file rel: a SourceFile if regular, Skipped if a link or special, None if missing."""

    def close(self) -> None:
        """Release connections; the default holds none."""


# paramiko answers a big read() by joining many prefetched 32 KiB packets, which cost
# more than it saves: reading packet-sized chunks measured 40 -> 63 MB/s on loopback.
SFTP_CHUNK = 32 * 1024


def _copy_verified(read: Callable[[int], bytes], dest: Path, chunk_size: int = CHUNK) -> tuple[str, int]:
    """Copy read() to a new file dest, then read dest back: (sha256, size) or CopyMismatch.

    dest is created exclusively (never through a link) and removed on any failure.
    """
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            for block in iter(lambda: read(chunk_size), b""):
                digest.update(block)
                out.write(block)
                size += len(block)
        sent = digest.hexdigest()
        written = os.stat(dest).st_size
        if written != size or sha256_file(dest) != sent:
            raise CopyMismatch(errno.EIO, f"read back {written} bytes that differ from the {size} bytes copied")
    except BaseException:
        try:
            os.unlink(dest)
        except FileNotFoundError:
            pass
        raise
    return sent, size


class LocalFiles(HostFiles):
    parallel_fetches = max(1, os.cpu_count() or 1)

    def __init__(self, root: str, cache: HashCache, allow_links: bool = True, made_since: float | None = None) -> None:
        super().__init__(root)
        self.cache = cache
        self.allow_links = allow_links
        self.made_since = made_since  # when the job was created: older hard-linked files are not the job's

    def walk(self, rel_dir: str) -> Listing:
        return list_tree(self.root, rel_dir, self.made_since)

    def walk_file(self, rel: str) -> SourceFile | Skipped | None:
        try:
            st = stat_file(self.root, rel)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except NotFollowed as err:
            return err.skipped
        if stat.S_ISREG(st.st_mode) and foreign_hard_link(st, job_owner(self.root), self.made_since):
            return hard_link_skipped(rel, st)
        if stat.S_ISREG(st.st_mode):
            return SourceFile(rel, st.st_size, st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            return None
        detail = os.readlink(os.path.join(self.root, rel)) if stat.S_ISLNK(st.st_mode) else ""
        return Skipped(rel, file_kind(st.st_mode), detail)

    def fetch(self, item: SourceFile, dest: Path) -> Fetched:
        fd = open_regular(self.root, item.rel)
        appended = item.rel.endswith(APPENDED_IN_PLACE)
        with os.fdopen(fd, "rb") as source:
            before = os.fstat(fd)
            if foreign_hard_link(before, job_owner(self.root), self.made_since):
                # Listed as the job's own file, linked to someone else's since: never read it.
                raise NotRegular(f"{item.rel}: is now a hard link to a file the job did not write; not collected")
            if self.allow_links and not appended:
                try:
                    # Only the inode that was opened and checked may end up linked.
                    link_same_inode(self.root, item.rel, dest, before)
                    return Fetched("link", None, before.st_size)
                except NotRegular:
                    raise
                except OSError as err:
                    # Other file system, or one without hard links: copy instead.
                    if err.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
            digest, size = _copy_verified(source.read, dest)
            after = os.fstat(fd)
            if not appended and (size != before.st_size or (after.st_size, after.st_mtime_ns)
                                 != (before.st_size, before.st_mtime_ns)):
                os.unlink(dest)
                raise CopyMismatch(errno.EIO, f"changed while being copied ({before.st_size} -> {after.st_size} bytes)")
        os.chmod(dest, stat.S_IMODE(before.st_mode))
        os.utime(dest, ns=(before.st_atime_ns, before.st_mtime_ns))
        return Fetched("copy", digest, size)

    def uri(self, rel: str) -> str:
        return str(Path(self.root, *rel.split("/")))


_PREFETCH_HOOK_INSTALLED = False


def _quiet_prefetch_thread_errors(session_errors: tuple[type[BaseException], ...]) -> None:
    """Keep paramiko's prefetch thread from printing a traceback when the session dies.

    SFTPFile.prefetch() sends read requests from a thread of its own; when the server
    goes away mid-copy that thread dies with "Socket is closed", and Python prints its
    traceback on stderr. The reading thread meets the same failure and reports it as one
    line (host_lost), so only that thread's session errors are silenced.
    """
    global _PREFETCH_HOOK_INSTALLED
    if _PREFETCH_HOOK_INSTALLED:
        return
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else ""
        if "_prefetch_thread" in name and issubclass(args.exc_type, session_errors):
            return
        previous(args)

    threading.excepthook = hook
    _PREFETCH_HOOK_INSTALLED = True


class SftpFiles(HostFiles):
    """A remote host's job dir over an open paramiko SFTPClient.

    SFTP cannot open without following links, so each file is lstat'ed right before it
    is opened and the open handle's attributes must match what was listed (size, mtime).
    Every request has a timeout (io_timeout_s): a host that stops answering mid-copy is
    lost, not waited on forever.
    """

    def __init__(self, root: str, sftp: Any, host_uri: str, on_close: Any = None, io_timeout_s: float = 60.0) -> None:
        super().__init__(root)
        self.sftp = sftp
        self.host_uri = host_uri  # e.g. "ssh://user@127.0.0.2:22"
        self._on_close = on_close
        import paramiko  # only here: local collections never pay its import

        self._ssh_exception = paramiko.SSHException
        _quiet_prefetch_thread_errors((OSError, EOFError, paramiko.SSHException))
        channel = sftp.get_channel() if hasattr(sftp, "get_channel") else None
        if channel is not None:
            channel.settimeout(io_timeout_s)
        self.io_timeout_s = io_timeout_s

    def _path(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def _lost(self, err: BaseException) -> HostLost:
        if isinstance(err, (socket.timeout, TimeoutError)):
            return HostLost(f"SFTP session lost: no answer for {self.io_timeout_s:g} s")
        return HostLost(f"SFTP session lost: {err or type(err).__name__}")

    def _is_session_error(self, err: BaseException) -> bool:
        if isinstance(err, (EOFError, self._ssh_exception, socket.timeout, TimeoutError)):
            return True
        # paramiko raises a bare OSError("Socket is closed") once the transport is gone.
        return isinstance(err, OSError) and getattr(err, "errno", None) is None and "closed" in str(err).lower()

    @contextlib.contextmanager
    def _session_errors(self) -> Iterator[None]:
        """Around SFTP calls: a dead or silent session becomes HostLost; every other error
        (the file system's OSError, and our own NotRegular / CopyMismatch) passes as it is."""
        try:
            yield
        except (HostLost, NotRegular, CopyMismatch):
            raise
        except (EOFError, self._ssh_exception) as err:
            raise self._lost(err) from None
        except OSError as err:
            if self._is_session_error(err):
                raise self._lost(err) from None
            raise

    def _skipped(self, rel: str, mode: int) -> Skipped:
        detail = ""
        if stat.S_ISLNK(mode):
            try:
                detail = self.sftp.readlink(self._path(rel)) or "?"
            except (OSError, self._ssh_exception):
                detail = "?"
        return Skipped(rel, file_kind(mode), detail)

    def walk(self, rel_dir: str) -> Listing:
        try:
            with self._session_errors():
                top = self.sftp.lstat(self._path(rel_dir))
        except HostLost:
            raise
        except OSError as err:  # paramiko raises IOError(ENOENT) for a missing path
            if getattr(err, "errno", None) == errno.ENOENT:
                raise FileNotFoundError(self.uri(rel_dir)) from None
            raise
        if not stat.S_ISDIR(top.st_mode or 0):
            raise NotFollowed(self._skipped(rel_dir, top.st_mode or 0))
        listing = Listing()
        pending = [(rel_dir, 0)]
        while pending:
            rel, depth = pending.pop()
            with self._session_errors():
                entries = self.sftp.listdir_attr(self._path(rel))
            subdirs = []
            # READDIR attributes are lstat's: a link shows as a link, never as its target.
            for attr in sorted(entries, key=lambda a: a.filename):
                entry_rel = posixpath.join(rel, attr.filename)
                mode = attr.st_mode or 0
                if stat.S_ISDIR(mode):
                    if depth + 1 >= MAX_DEPTH:
                        listing.skipped.append(Skipped(entry_rel, "directory", f"more than {MAX_DEPTH} levels deep"))
                    else:
                        subdirs.append((entry_rel, depth + 1))
                elif stat.S_ISREG(mode):
                    listing.files.append(SourceFile(entry_rel, int(attr.st_size or 0), float(attr.st_mtime or 0)))
                else:
                    listing.skipped.append(self._skipped(entry_rel, mode))
            pending.extend(reversed(subdirs))
        listing.files.sort(key=lambda f: f.rel)
        return listing

    def walk_file(self, rel: str) -> SourceFile | Skipped | None:
        try:
            with self._session_errors():
                attr = self.sftp.lstat(self._path(rel))
        except HostLost:
            raise
        except OSError:
            return None
        mode = attr.st_mode or 0
        if stat.S_ISREG(mode):
            return SourceFile(rel, int(attr.st_size or 0), float(attr.st_mtime or 0))
        return None if stat.S_ISDIR(mode) else self._skipped(rel, mode)

    def fetch(self, item: SourceFile, dest: Path) -> Fetched:
        appended = item.rel.endswith(APPENDED_IN_PLACE)
        path = self._path(item.rel)
        with self._session_errors():
            now = self.sftp.lstat(path)
            if not stat.S_ISREG(now.st_mode or 0):
                raise NotRegular(f"{item.rel}: is now a {file_kind(now.st_mode or 0)}, not the regular file that was listed")
            with self.sftp.open(path, "rb") as remote:
                opened = remote.stat()
                if not stat.S_ISREG(opened.st_mode or 0) or (
                        not appended and (opened.st_size, int(opened.st_mtime or 0)) != (item.size, int(item.mtime))):
                    raise NotRegular(f"{item.rel}: changed after listing ({item.size} -> {opened.st_size} bytes)")
                # Pipelined reads: without prefetch every 32 KiB read is one round trip.
                remote.prefetch(opened.st_size)
                digest, size = _copy_verified(remote.read, dest, SFTP_CHUNK)
        if not appended and size != item.size:
            os.unlink(dest)
            raise CopyMismatch(errno.EIO, f"{size} of {item.size} bytes arrived")
        os.utime(dest, (item.mtime, item.mtime))
        return Fetched("sftp", digest, size)

    def uri(self, rel: str) -> str:
        return f"{self.host_uri}{self._path(rel)}"

    def close(self) -> None:
        try:
            self.sftp.close()
        except Exception:  # noqa: BLE001 - closing a dead session raises whatever paramiko has left
            pass
        finally:
            if self._on_close is not None:
                self._on_close()
