"""What listing a host's job directory yields: files to take and entries deliberately left.

A results directory must hold only bytes that were inside the job directory. So a
listing never follows a symbolic link (a `LOG0/x -> /etc/shadow` or `LOG1 -> /etc`
would copy what is outside) and never opens a FIFO, socket or device (a read could
block forever or have effects); each such entry is kept as a Skipped record, which
the summary lists, instead of vanishing silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceFile:
    rel: str  # POSIX path relative to the host's job dir, e.g. "LOG0/ckpt/a.ckpt"
    size: int
    mtime: float

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"{self.rel}: negative size {self.size}")


@dataclass(frozen=True)
class Skipped:
    rel: str  # relative to the host's job dir
    kind: str  # "symbolic link" | "FIFO" | "socket" | "character device" | "block device" | ...
    detail: str = ""  # a link's target, as read (never resolved)

    @property
    def is_link(self) -> bool:
        return self.kind == "symbolic link"

    def describe(self) -> str:
        target = f" -> {self.detail}" if self.detail else ""
        what = "not followed" if self.is_link else "not read"
        return f"{self.rel}{target}: a {self.kind}, {what}"


@dataclass
class Listing:
    files: list[SourceFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def extend(self, other: "Listing") -> None:
        self.files.extend(other.files)
        self.skipped.extend(other.skipped)


class NotFollowed(OSError):
    """A directory that was asked for is itself a link or special file: listed as skipped."""

    def __init__(self, skipped: Skipped) -> None:
        super().__init__(skipped.describe())
        self.skipped = skipped


class NotRegular(OSError):
    """A file that was listed as regular is not one (any more) when opened."""
