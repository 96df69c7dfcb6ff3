"""The hosts of a job: what the user wrote (HostEntry), what the plan uses (Host), one parser for both flags.

Pure: no network. ``--hosts h1,user@h2:2222,[fe80::1]:22`` gives one entry per comma; a
hostfile gives one per line in DeepSpeed's format plus an optional user and port::

    # comments and blank lines are ignored
    worker-1 slots=8
    root@10.0.0.2:2222 slots=4
    10.0.0.3

``slots=N`` is how many ranks that host runs (default: ``--devices``). An entry without
user and port that names this machine (localhost, 127.0.0.1, its hostname or FQDN) is
*local*: the launcher starts its ranks itself; every other entry is reached over SSH.
An entry becomes a ``Host`` once it is known where the other hosts reach it (and, for
the plan, which cores and CPU flags it has): ``entry.local_host()`` for this machine,
the ssh config and pre-flight for the others. Every error is one ``ValueError`` line
naming the flag or ``file:line``.
"""
from __future__ import annotations

import dataclasses
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

# One rule for user names everywhere (hostfile, --hosts, job.json).
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
# Host names (RFC 1123 labels, underscores tolerated as ssh does) and IPv4 literals.
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?\Z")
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?\Z")
MAX_SLOTS = 1024  # the same bound as --devices per host
_SLOTS = re.compile(r"^slots=(\S*)\Z")
# A plan's host name: a host as above, optionally with :port ([v6]:port); nothing a shell or a
# hostfile line could read differently.
_NAME = re.compile(r"^[A-Za-z0-9_.:%\[\]-]+\Z")
# What other ranks connect to: a host name or an IPv4/IPv6 address.
_ADDRESS = re.compile(r"^[A-Za-z0-9_.:%-]+\Z")

LOCAL_ADDRESS = "127.0.0.1"
DEFAULT_SSH_PORT = 22
# In --hccn-conf: replaced by each host's name, for hosts whose hccn.conf is elsewhere (or test
# hosts that share one machine and each need their own).
HOST_PLACEHOLDER = "{host}"


def _check_host(host: str, where: str) -> None:
    if not host:
        raise ValueError(f"{where}: empty host name")
    if not (_HOSTNAME.match(host) or (":" in host and _IPV6.match(host))):
        raise ValueError(f"{where}: {host!r} is not a host name or IP address")


def _check_user(user: Optional[str], where: str) -> None:
    if user is not None and not _USER.match(user):
        raise ValueError(f"{where}: user {user!r} may only contain letters, digits, '.', '_', '-'")


def _check_port(port: Optional[int], where: str) -> None:
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{where}: port {port} is out of range 1..65535")


def local_names() -> frozenset[str]:
    """Names that mean "this machine"."""
    names = {"localhost", LOCAL_ADDRESS, "::1", socket.gethostname()}
    try:
        names.add(socket.getfqdn())
    except OSError:
        pass
    return frozenset(n for n in names if n)


@dataclass(frozen=True)
class HostEntry:
    """One host as the user wrote it; ``port``/``user`` None means "as ssh config says"."""

    host: str
    user: Optional[str] = None
    port: Optional[int] = None
    slots: Optional[int] = None
    source: str = "--hosts"  # where it was written, for error messages ("--hosts", "hosts.txt:3")
    local: bool = False  # this machine (no user, no port, one of its names)
    spare: bool = False  # not planned: takes the place of a host that is lost (--spare-hosts, "spare")

    def __post_init__(self) -> None:
        _check_host(self.host, self.source)
        _check_user(self.user, self.source)
        _check_port(self.port, self.source)
        if self.slots is not None and not 1 <= self.slots <= MAX_SLOTS:
            raise ValueError(f"{self.source}: slots={self.slots} must be at least 1")
        if self.local and (self.user is not None or self.port is not None):
            raise ValueError(f"{self.source}: {self.label!r}: a user or port means SSH, not this machine")

    @property
    def name(self) -> str:
        """The host's name in the plan, job.json and logs: the host, and the port when one was written."""
        if self.port is None:
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def label(self) -> str:
        """The entry as written, user included (for messages)."""
        return f"{self.user}@{self.name}" if self.user else self.name

    def local_host(self) -> "Host":
        """This machine as a plan host: others on it reach it at 127.0.0.1 (the resolver may change that)."""
        if not self.local:
            raise ValueError(f"{self.source}: {self.label!r} is not this machine")
        return Host(name=self.name, address=LOCAL_ADDRESS, local=True, slots=self.slots)


@dataclass(frozen=True)
class Host:
    """One machine of a job as the plan uses it.

    name: the entry's name (shown in logs as ``[name:rank]``, the key in job.json).
    address: what other ranks use to reach it (the scheduler address in dynamic mode).
    user, port: how the launcher reaches it over SSH (remote hosts).
    cpus: core ids a job may use there (empty = unknown, no binding).
    cpu_flags: /proc/cpuinfo flags there (used for the CPU tuning environment).
    slots: ranks the hostfile gives it (None: --devices decides).
    shared_job_dir: its LOG<rank>/ dirs are visible here too (a Slurm node: the job dir is on a file
        system every node sees, checked before start), so results are read in place, not over SSH.
    """

    name: str
    address: str
    user: Optional[str] = None
    port: int = DEFAULT_SSH_PORT
    local: bool = True
    cpus: tuple[int, ...] = ()
    cpu_flags: frozenset[str] = field(default_factory=frozenset)
    slots: Optional[int] = None
    shared_job_dir: bool = False

    def __post_init__(self) -> None:
        if not self.name or not _NAME.match(self.name):
            raise ValueError(f"host name {self.name!r}: use letters, digits and . - _ : [ ] only")
        if not self.address or not _ADDRESS.match(self.address):
            raise ValueError(f"host {self.name}: address {self.address!r}: use letters, digits, '.', '-', '_' or ':'")
        _check_user(self.user, f"host {self.name}")
        _check_port(self.port, f"host {self.name}")
        if len(set(self.cpus)) != len(self.cpus) or any(c < 0 for c in self.cpus):
            raise ValueError(f"host {self.name}: cpu ids must be distinct non-negative integers, got {self.cpus}")


@dataclass(frozen=True)
class PreparedHosts:
    """What looking at the hosts found (SSH pre-flight, a Slurm allocation's probe), for resolve_spec."""

    hosts: tuple[Host, ...]  # every host of the job in rank order, this machine included
    hccn_texts: dict = field(default_factory=dict)  # remote host name -> (source, hccn.conf text)
    scheduler_port: Optional[int] = None  # free on a remote first host (dynamic mode)
    # GPU ids every host offers as the engine that allocated them says (a Slurm allocation's Gres);
    # None: ask nvidia-smi on this machine.
    gpu_ids: Optional[tuple[int, ...]] = None


def this_machine() -> HostEntry:
    """The default when no --hosts is given: this machine under its host name."""
    return HostEntry(socket.gethostname(), local=True)


def parse_host(entry: str, source: str = "--hosts", names_of_this_machine: Optional[Iterable[str]] = None) -> HostEntry:
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
    mine = local_names() if names_of_this_machine is None else frozenset(names_of_this_machine)
    local = user is None and port is None and host in mine
    return HostEntry(host=host, user=user, port=port, source=source, local=local)


def parse_hosts_arg(value: str, flag: str = "--hosts",
                    names_of_this_machine: Optional[Iterable[str]] = None) -> tuple[HostEntry, ...]:
    """Parse the comma-separated ``--hosts`` value; the same host twice is an error."""
    mine = local_names() if names_of_this_machine is None else frozenset(names_of_this_machine)
    entries = tuple(parse_host(entry, f"{flag} entry {i + 1}", mine) for i, entry in enumerate(value.split(",")))
    check_distinct(entries)
    return entries


def parse_hostfile(text: str, path: str, names_of_this_machine: Optional[Iterable[str]] = None) -> tuple[HostEntry, ...]:
    """Parse hostfile text: ``[user@]host[:port] [slots=N] [spare]`` per line, ``#`` comments."""
    mine = local_names() if names_of_this_machine is None else frozenset(names_of_this_machine)
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}:{number}"
        slots: Optional[int] = None
        spare = False
        for extra in fields[1:]:
            if extra == "spare":
                spare = True
                continue
            match = _SLOTS.match(extra)
            if not match:
                raise ValueError(f"{where}: unexpected {extra!r} (expected 'slots=N' or 'spare')")
            if slots is not None:
                raise ValueError(f"{where}: slots given twice")
            if not (match.group(1).isascii() and match.group(1).isdigit()):
                raise ValueError(f"{where}: slots={match.group(1)[:20]!r} is not a whole number")
            if len(match.group(1)) > 4 or int(match.group(1)) > MAX_SLOTS:
                raise ValueError(f"{where}: slots={match.group(1)[:20]} is more than {MAX_SLOTS} ranks on one host")
            slots = int(match.group(1))
        entry = parse_host(fields[0], where, mine)
        entries.append(HostEntry(entry.host, entry.user, entry.port, slots, where, entry.local, spare))
    if not [entry for entry in entries if not entry.spare]:
        raise ValueError(f"{path}: no hosts in hostfile" + (" (only spares)" if entries else ""))
    result = tuple(entries)
    check_distinct(result)
    return result


def read_hostfile(path: Path, names_of_this_machine: Optional[Iterable[str]] = None) -> tuple[HostEntry, ...]:
    """Read and parse a hostfile; unreadable files are a one-line ValueError too."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--hostfile {path}: cannot read: {getattr(error, 'strerror', None) or error}") from None
    return parse_hostfile(text, str(path), names_of_this_machine)


def host_entries(hosts: Optional[str], hostfile: Optional[Path], spare_hosts: Optional[str] = None
                 ) -> tuple[HostEntry, ...]:
    """The job's hosts from ``--hosts`` or ``--hostfile`` (one of them; this machine when neither),
    then the spares (``--spare-hosts``, and hostfile lines marked ``spare``), marked ``spare``."""
    if hosts and hostfile:
        raise ValueError("--hosts and --hostfile: give one of them")
    if hostfile:
        entries = read_hostfile(hostfile)
    elif hosts is not None and hosts.strip():
        entries = parse_hosts_arg(hosts)
    else:
        entries = (this_machine(),)
    if spare_hosts is not None and spare_hosts.strip():
        spares = tuple(dataclasses.replace(entry, spare=True)
                       for entry in parse_hosts_arg(spare_hosts, "--spare-hosts"))
        try:
            check_distinct(entries + spares)
        except ValueError as exc:
            raise ValueError(f"--spare-hosts: a spare is one of the job's hosts ({exc})") from None
        entries += spares
    return entries


def _literal_address(entry: HostEntry) -> tuple[str, int]:
    return entry.host.lower().rstrip("."), entry.port if entry.port is not None else DEFAULT_SSH_PORT


def check_distinct(
    entries: Sequence[HostEntry],
    resolve: Callable[[HostEntry], tuple[str, int]] = _literal_address,
) -> None:
    """The same machine twice would get two sets of ranks fighting for its devices.

    Raise when two entries are both this machine, or reach the same address:port
    (``resolve`` maps an entry to (address, port); by default the host as written).
    """
    local: Optional[HostEntry] = None
    seen: dict[tuple[str, int], HostEntry] = {}
    for entry in entries:
        if entry.local:
            if local is not None:
                raise ValueError(f"{entry.source}: {local.label!r} and {entry.label!r} are both this machine")
            local = entry
            continue
        key = resolve(entry)
        if key in seen:
            first = seen[key]
            raise ValueError(
                f"{entry.source}: {entry.label!r} is the same host as {first.label!r} ({first.source}): "
                f"{key[0]}:{key[1]}"
            )
        seen[key] = entry
