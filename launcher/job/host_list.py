"""Hosts a job runs on, and parsing of ``--hosts``.

Only names of this machine are understood here (``localhost``, ``127.0.0.1``, its
hostname, its FQDN). Remote names are handed to a *remote host parser* that the
multi-host support provides (``launcher/job/hosts.py``); the CLI passes it in, so this module
never depends on SSH. Without one, a remote name is a clear error.
"""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from launcher.errors import LaunchError

# Letters, digits, dots, dashes, colons (IPv6) and underscores: enough for host names
# and addresses, and nothing that could change the meaning of a hostfile line or a shell word.
_HOST_TEXT = re.compile(r"^[A-Za-z0-9_.:%-]+\Z")

# Names are what the user wrote (user@host:port, [v6]:port): shown in logs and comments only.
_HOST_NAME = re.compile(r"^[A-Za-z0-9_.:%@\[\]-]+\Z")

LOCAL_ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class Host:
    """One machine of a job: who it is, how to reach it, and what it offers.

    name: what the user wrote (shown in logs as ``[name:rank]``).
    address: what other ranks use to reach it (the scheduler address in dynamic mode).
    cpus: core ids a job may use there (empty = unknown, no binding).
    cpu_flags: /proc/cpuinfo flags there (used for the CPU tuning environment).
    shared_job_dir: the job dir there is the same directory as here (Slurm nodes).
    """

    name: str
    address: str
    user: Optional[str] = None
    port: int = 22
    local: bool = True
    cpus: tuple[int, ...] = ()
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    # Its LOG<rank>/ dirs are visible here too (a Slurm node: the job dir is on a file system every
    # node sees, checked before start), so results are read in place, not fetched over SSH.
    shared_job_dir: bool = False

    def __post_init__(self) -> None:
        if not self.name or not _HOST_NAME.match(self.name):
            raise ValueError(f"host name {self.name!r}: use letters, digits and . - _ : @ [ ] only")
        if not self.address or not _HOST_TEXT.match(self.address):
            raise ValueError(f"host address {self.address!r}: use letters, digits, '.', '-', '_' or ':' only")
        if self.user is not None and not re.match(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*\Z", self.user):
            raise ValueError(f"host {self.name}: bad user name {self.user!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"host {self.name}: port {self.port} is not in 1..65535")
        if len(set(self.cpus)) != len(self.cpus) or any(c < 0 for c in self.cpus):
            raise ValueError(f"host {self.name}: cpu ids must be distinct non-negative integers, got {self.cpus}")


RemoteHostParser = Callable[[str], Host]


def local_names() -> frozenset[str]:
    """Names that mean "this machine"."""
    names = {"localhost", LOCAL_ADDRESS, "::1"}
    hostname = socket.gethostname()
    names.add(hostname)
    try:
        names.add(socket.getfqdn())
    except OSError:
        pass
    return frozenset(n for n in names if n)


def local_host(name: Optional[str] = None) -> Host:
    """This machine, named as the user named it (default: its hostname)."""
    return Host(name=name or socket.gethostname(), address=LOCAL_ADDRESS, local=True)


def parse_hosts(
    text: Optional[str],
    remote_parser: Optional[RemoteHostParser] = None,
    *,
    names_of_this_machine: Optional[Iterable[str]] = None,
) -> tuple[Host, ...]:
    """``--hosts`` (comma separated) -> hosts in order; None or empty means this machine alone.

    A name that is not this machine goes to ``remote_parser``; without one it is an error
    saying that remote hosts need SSH support.
    """
    if text is None or not text.strip():
        return (local_host(),)
    mine = frozenset(names_of_this_machine) if names_of_this_machine is not None else local_names()
    hosts: list[Host] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            raise LaunchError(f"--hosts {text!r}: empty host name between commas")
        if entry in mine:
            hosts.append(local_host(entry))
        elif remote_parser is not None:
            try:
                hosts.append(remote_parser(entry))
            except ValueError as exc:
                raise LaunchError(f"--hosts {entry!r}: {exc}") from None
        else:
            raise LaunchError(
                f"--hosts {entry!r}: not a name of this machine; remote hosts need the SSH support "
                f"(launcher/job/hosts.py), which is not installed"
            )
    check_distinct(hosts)
    return tuple(hosts)


def check_distinct(hosts: Sequence[Host]) -> None:
    """The same machine twice would get two sets of ranks fighting for its devices."""
    seen: dict[tuple[str, int], str] = {}
    local_seen: Optional[str] = None
    for host in hosts:
        if host.local:
            if local_seen is not None:
                raise LaunchError(f"--hosts: {local_seen!r} and {host.name!r} are both this machine")
            local_seen = host.name
            continue
        key = (host.address, host.port)
        if key in seen:
            raise LaunchError(f"--hosts: {seen[key]!r} and {host.name!r} are the same host")
        seen[key] = host.name
