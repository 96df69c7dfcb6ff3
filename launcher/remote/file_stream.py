"""A host's files sent down its agent's own SSH channel, ahead of the agent's protocol lines.

One SSH session per host: the controller (or a relay) starts the agent with
``--receive-files`` and writes on its stdin, before any protocol line, one header line and
then the files' bytes, one after the other:

    files [["LOG0/env.sh", 812, false], ["LOG0/run.sh", 1430, true], ...]\\n<812 bytes><1430 bytes>...

The agent reads exactly that (``receive_files``), writes each file under the job dir
atomically (a temporary name of its own, then a rename: hosts that share the job dir's file
system see whole files), and only then reads protocol lines. Copying over SFTP was one more
SSH session per host, and a session runs the user's login shell: on a host whose ~/.bashrc
runs ``pyenv init`` or ``conda init`` that is ~100 ms of CPU and a lock each time
(FIELD_NOTES "Many hosts"), paid by every host of the job.

A host whose ranks another launcher starts (mpirun's other hosts) gets its files the same
way without an agent: ``python -m launcher.remote.file_stream --job-dir DIR`` (``main``) reads
them, writes them, and exits 0 (2 and one line on stderr when it cannot).
"""
from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Sequence

if TYPE_CHECKING:
    from launcher.remote.host_slice import PushedFile

HEADER_WORD = b"files "
# A relay of 4,096 hosts' tree is sent ~130 hosts' slices: ~2,300 entries of ~60 bytes.
MAX_HEADER_BYTES = 16 << 20
# Everything one host is sent (its slice, a relay's subtree, rank-table mode's whole table per host).
MAX_TOTAL_BYTES = 4 << 30
CHUNK = 1 << 20


def encode_files(files: "Sequence[PushedFile]") -> bytes:
    """The header line and the files' bytes, as the agent reads them."""
    bodies = [item.text.encode() for item in files]
    header = json.dumps([[item.path, len(body), item.executable] for item, body in zip(files, bodies)])
    return HEADER_WORD + header.encode() + b"\n" + b"".join(bodies)


def _entries(header: bytes) -> list[tuple[str, int, bool]]:
    """The header's [path, size, executable] entries; ValueError (one line) for anything else."""
    if not header.endswith(b"\n"):
        raise ValueError(f"the files header is cut off or longer than {MAX_HEADER_BYTES} bytes")
    if not header.startswith(HEADER_WORD):
        raise ValueError(f"expected a files header first, got {header[:40]!r}")
    try:
        entries = json.loads(header[len(HEADER_WORD):])
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"the files header is not JSON: {error}") from None
    if not isinstance(entries, list):
        raise ValueError("the files header is not a list")
    out, total = [], 0
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
                and isinstance(entry[2], bool)):
            raise ValueError(f"files header: {str(entry)[:80]}: expected [path, size, executable]")
        path, size, executable = entry
        parts = path.split("/")
        if not path or posixpath.isabs(path) or "\0" in path or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"files header: {path[:80]!r}: not a path inside the job dir")
        total += size
        if total > MAX_TOTAL_BYTES:
            raise ValueError(f"files header: more than {MAX_TOTAL_BYTES >> 30} GiB of files")
        out.append((path, size, executable))
    return out


def receive_files(stream: BinaryIO, job_dir: Path) -> int:
    """Read the header and the files from ``stream`` and write them under ``job_dir``; the file count.

    Exactly the files' bytes are read, nothing after them (the protocol lines that follow are
    the caller's). ValueError for a malformed header or a stream that ends early, OSError when
    a file cannot be written.
    """
    entries = _entries(stream.readline(MAX_HEADER_BYTES))
    made: set[str] = set()
    for path, size, executable in entries:
        target = job_dir / path
        parent = str(target.parent)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        # A name of its own: hosts sharing the job dir's file system may be sent the same file
        # (launcher.remote.relay skips such names when it reads its staging).
        # (os.urandom, not secrets: secrets imports hmac and OpenSSL, 11 ms of every agent's start.)
        temp = target.parent / f".{target.name}.push-{os.urandom(4).hex()}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                left = size
                while left:
                    data = stream.read(min(left, CHUNK))
                    if not data:
                        raise ValueError(f"the stream ended {left} bytes before the end of {path}")
                    handle.write(data)
                    left -= len(data)
                os.fchmod(handle.fileno(), 0o755 if executable else 0o644)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    return len(entries)


def main(argv: "Sequence[str] | None" = None) -> int:
    """``python -m launcher.remote.file_stream --job-dir DIR``: receive a host's files and exit, for a host
    whose ranks another launcher starts (mpirun's other hosts): one line on stderr and 2 on failure."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m launcher.remote.file_stream",
                                     description="write the files sent on stdin under the job dir")
    parser.add_argument("--job-dir", required=True, type=Path, help="the job dir (same path on every host)")
    args = parser.parse_args(argv)
    try:
        count = receive_files(sys.stdin.buffer, args.job_dir.resolve())
    except (OSError, ValueError) as error:
        print(f"cannot receive the job files into {args.job_dir}: {error}", file=sys.stderr)
        return 2
    print(f"received {count} files", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
