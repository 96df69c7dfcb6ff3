"""Which hosts a job runs on: ``--hosts`` entries and ``--hostfile`` lines, parsed.

Pure parsing, no network. ``--hosts h1,user@h2:2222,[fe80::1]:22`` gives one entry per
comma; a hostfile gives one per line in DeepSpeed's format plus an optional user and
port::

    # comments and blank lines are ignored
    worker-1 slots=8
    root@10.0.0.2:2222 slots=4
    10.0.0.3

``slots=N`` is how many ranks that host runs (default: ``--devices``). Every error is
one ``ValueError`` line naming the flag or ``file:line``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# Host names (RFC 1123 labels, underscores tolerated as ssh does) and IPv4 literals.
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?\Z")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\Z")
MAX_SLOTS = 1024  # the same bound as --devices per host
_SLOTS = re.compile(r"^slots=(\S*)\Z")


@dataclass(frozen=True)
class HostSpec:
    """One host as the user wrote it; ``port``/``user`` None means "as ssh config says"."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    slots: Optional[int] = None
    source: str = "--hosts"  # where it was written, for error messages ("--hosts", "hosts.txt:3")

    def __post_init__(self) -> None:
        where = self.source
        if not self.host:
            raise ValueError(f"{where}: empty host name")
        if not (_HOSTNAME.match(self.host) or (":" in self.host and _IPV6.match(self.host))):
            raise ValueError(f"{where}: {self.host!r} is not a host name or IP address")
        if self.user is not None and not _USER.match(self.user):
            raise ValueError(f"{where}: user {self.user!r} may only contain letters, digits, '.', '_', '-'")
        if self.port is not None and not 0 < self.port < 65536:
            raise ValueError(f"{where}: port {self.port} is out of range 1..65535")
        if self.slots is not None and not 1 <= self.slots <= MAX_SLOTS:
            raise ValueError(f"{where}: slots={self.slots} must be at least 1")

    @property
    def name(self) -> str:
        """The entry as written (user, host, port), used to name the host everywhere."""
        host = f"[{self.host}]" if ":" in self.host and self.port is not None else self.host
        text = f"{self.user}@{host}" if self.user else host
        return f"{text}:{self.port}" if self.port is not None else text


def parse_host(entry: str, source: str = "--hosts") -> HostSpec:
    """Parse ``[user@]host[:port]`` (IPv6 as ``[addr]:port`` or a bare ``addr``)."""
    text = entry.strip()
    if not text:
        raise ValueError(f"{source}: empty host entry")
    user: Optional[str] = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise ValueError(f"{source}: {entry!r} has an empty user before '@'")
    port_text: Optional[str] = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket:
            raise ValueError(f"{source}: {entry!r} has '[' without a closing ']'")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{source}: {entry!r}: expected ':port' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text  # a host name, or a bare IPv6 address without a port
    port: Optional[int] = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
            raise ValueError(f"{source}: {entry!r}: port {port_text!r} is not a number")
        port = int(port_text)
    return HostSpec(host=host, user=user, port=port, source=source)


def parse_hosts_arg(value: str, flag: str = "--hosts") -> tuple[HostSpec, ...]:
    """Parse the comma-separated ``--hosts`` value; duplicates are an error."""
    entries = value.split(",")
    specs = tuple(parse_host(entry, f"{flag} entry {i + 1}") for i, entry in enumerate(entries))
    check_unique(specs)
    return specs


def parse_hostfile(text: str, path: str) -> tuple[HostSpec, ...]:
    """Parse hostfile text: ``[user@]host[:port] [slots=N]`` per line, ``#`` comments."""
    specs = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}:{number}"
        slots: Optional[int] = None
        for extra in fields[1:]:
            match = _SLOTS.match(extra)
            if not match:
                raise ValueError(f"{where}: unexpected {extra!r} (expected 'slots=N')")
            if slots is not None:
                raise ValueError(f"{where}: slots given twice")
            if not (match.group(1).isascii() and match.group(1).isdigit()):
                raise ValueError(f"{where}: slots={match.group(1)[:20]!r} is not a whole number")
            if len(match.group(1)) > 4 or int(match.group(1)) > MAX_SLOTS:
                raise ValueError(f"{where}: slots={match.group(1)[:20]} is more than {MAX_SLOTS} ranks on one host")
            slots = int(match.group(1))
        spec = parse_host(fields[0], where)
        specs.append(HostSpec(spec.host, spec.user, spec.port, slots, where))
    if not specs:
        raise ValueError(f"{path}: no hosts in hostfile")
    result = tuple(specs)
    check_unique(result)
    return result


def read_hostfile(path: Path) -> tuple[HostSpec, ...]:
    """Read and parse a hostfile; unreadable files are a one-line ValueError too."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--hostfile {path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
    return parse_hostfile(text, str(path))


def _literal_address(spec: HostSpec) -> tuple[str, int]:
    return spec.host.lower().rstrip("."), spec.port if spec.port is not None else 22


def check_unique(
    specs: Iterable[HostSpec],
    resolve: Callable[[HostSpec], tuple[str, int]] = _literal_address,
) -> None:
    """Raise if two entries reach the same address:port (``resolve`` maps entry -> (address, port))."""
    seen: dict[tuple[str, int], HostSpec] = {}
    for spec in specs:
        key = resolve(spec)
        if key in seen:
            first = seen[key]
            raise ValueError(
                f"{spec.source}: {spec.name!r} is the same host as {first.name!r} ({first.source}): "
                f"{key[0]}:{key[1]}"
            )
        seen[key] = spec
