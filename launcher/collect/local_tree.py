"""Read a job directory on this machine without ever leaving it or blocking on it.

Every path below the job dir is walked one component at a time with O_NOFOLLOW
(openat on the parent's descriptor), so a symbolic link anywhere -- `LOG1 -> /etc`,
`LOG0/ckpt -> /`, a file swapped for a link after it was listed -- is refused instead
of followed. Files are checked to be regular before they are opened and again on the
open descriptor, and opened O_NONBLOCK, so a FIFO or device is never read. The job dir
itself is the user's choice and may be reached through links.
"""
from __future__ import annotations

import errno
import os
import stat

from launcher.collect.listing import Listing, NotFollowed, NotRegular, Skipped, SourceFile
from launcher.job.json_input import file_kind

# Deeper trees are not something a training job writes; refusing them bounds the walk.
MAX_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _parts(rel: str) -> list[str]:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{rel}: '..' leaves the job directory")
    return parts


def _readlink(name: str, dir_fd: int) -> str:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return "?"


def _open_dir(root: str, parts: list[str]) -> int:
    """Descriptor of root/parts..., no component a link; NotFollowed / FileNotFoundError otherwise."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, name in enumerate(parts):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                rel = "/".join(parts[: index + 1])
                detail = _readlink(name, fd) if stat.S_ISLNK(st.st_mode) else ""
                raise NotFollowed(Skipped(rel, file_kind(st.st_mode), detail))
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


# job.json's "created" is noted as the job dir is made; clock steps between hosts sharing the
# dir can make a job's own file look a little older. A secret linked in is usually far older.
CREATED_SLACK_S = 60.0


def foreign_hard_link(st: os.stat_result, owner: int, made_since: float | None) -> bool:
    """Whether a regular file is also another file's name that the job did not make.

    A hard link (`ln /home/u/.ssh/id_rsa LOG0/x`) is no symbolic link: opening it reads the
    secret. A file with more than one name is taken only when it is the job's user's and
    was written since the job was created (collect-results' own links of earlier collections
    are such files); without a start time, one whose mode keeps it private is left too.
    """
    if st.st_nlink <= 1:
        return False
    if st.st_uid != owner:
        return True
    if made_since is not None:
        return st.st_mtime < made_since - CREATED_SLACK_S
    return stat.S_IMODE(st.st_mode) & 0o077 == 0


def job_owner(root: str) -> int:
    """The user who ran the job: the owner of its job.json (the launcher writes it), else of the dir."""
    try:
        return os.stat(os.path.join(root, "job.json"), follow_symlinks=False).st_uid
    except OSError:
        return os.stat(root).st_uid


def hard_link_skipped(rel: str, st: os.stat_result) -> Skipped:
    return Skipped(rel, "hard link", f"{st.st_nlink} names, not written by the job")


def list_tree(root: str, rel_dir: str, made_since: float | None = None) -> Listing:
    """Regular files under root/rel_dir (recursively, sorted) and what was skipped.

    FileNotFoundError if rel_dir is absent; NotFollowed if it is itself a link or not a
    directory. made_since: when the job was created (epoch seconds), for foreign_hard_link.
    """
    owner = job_owner(root)
    listing = Listing()
    pending = [_parts(rel_dir)]
    while pending:
        parts = pending.pop()
        rel = "/".join(parts)
        try:
            fd = _open_dir(root, parts)
        except NotFollowed as err:
            if rel == "/".join(_parts(rel_dir)):
                raise
            listing.skipped.append(err.skipped)  # swapped for a link since its parent was read
            continue
        try:
            with os.scandir(fd) as entries:
                found = sorted(entries, key=lambda e: e.name)
            subdirs = []
            for entry in found:
                entry_rel = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # vanished while listing
                if stat.S_ISREG(st.st_mode) and foreign_hard_link(st, owner, made_since):
                    listing.skipped.append(hard_link_skipped(entry_rel, st))
                elif stat.S_ISREG(st.st_mode):
                    listing.files.append(SourceFile(entry_rel, st.st_size, st.st_mtime))
                elif stat.S_ISDIR(st.st_mode):
                    if len(parts) + 1 > MAX_DEPTH:
                        listing.skipped.append(Skipped(entry_rel, "directory", f"more than {MAX_DEPTH} levels deep"))
                    else:
                        subdirs.append(parts + [entry.name])
                else:
                    detail = _readlink(entry.name, fd) if stat.S_ISLNK(st.st_mode) else ""
                    listing.skipped.append(Skipped(entry_rel, file_kind(st.st_mode), detail))
        finally:
            os.close(fd)
        pending.extend(reversed(subdirs))  # depth first, in name order
    listing.files.sort(key=lambda f: f.rel)
    return listing


def stat_file(root: str, rel: str) -> os.stat_result:
    """lstat of root/rel with no link followed on the way; OSError / NotFollowed as _open_dir."""
    parts = _parts(rel)
    fd = _open_dir(root, parts[:-1])
    try:
        return os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)


def _open_parent_of_listed(root: str, rel: str) -> tuple[int, str]:
    """A descriptor of listed file root/rel's directory (no link followed) and its own name;
    NotRegular when a directory on the way is no longer what was listed."""
    parts = _parts(rel)
    try:
        return _open_dir(root, parts[:-1]), parts[-1]
    except NotFollowed as err:
        raise NotRegular(f"{err.skipped.describe()} (changed after listing)") from None


def open_regular(root: str, rel: str) -> int:
    """A read descriptor of the regular file root/rel; NotRegular if it is anything else now."""
    fd, name = _open_parent_of_listed(root, rel)
    try:
        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"{rel}: is now a {file_kind(st.st_mode)}, not the regular file that was listed")
        try:
            file_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise NotRegular(f"{rel}: is now a symbolic link, not followed") from None
            raise
    finally:
        os.close(fd)
    st = os.fstat(file_fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(file_fd)
        raise NotRegular(f"{rel}: is now a {file_kind(st.st_mode)}, not the regular file that was listed")
    return file_fd


def link_same_inode(root: str, rel: str, dest: str | os.PathLike[str], opened: os.stat_result) -> None:
    """Hard-link root/rel at dest, and make sure dest is the very inode `opened` describes.

    linkat() without AT_SYMLINK_FOLLOW links a name, not what it points to, so a file
    swapped for a link (or another file) since it was opened shows up as a different
    inode: then dest is removed and NotRegular raised. OSError (EXDEV, EPERM, ...) when
    the file system cannot link.
    """
    fd, name = _open_parent_of_listed(root, rel)
    try:
        os.link(name, dest, src_dir_fd=fd, follow_symlinks=False)
    finally:
        os.close(fd)
    st = os.stat(dest, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (opened.st_dev, opened.st_ino):
        os.unlink(dest)
        raise NotRegular(f"{rel}: replaced while being collected; not kept")
