"""What a rank table is, independent of the JSON layout it is written in."""
from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field, replace
from typing import Iterator, Optional, Sequence, Tuple

from hccl.addresses import parse_ipv4
from hccl.errors import HcclError

FORMATS = ("1.0", "1.2", "0.x")
DEFAULT_FORMAT = "1.0"
DEFAULT_DEVICE_PORT = 16666   # HCCL's default device NIC port in CANN's 1.2 examples
DEFAULT_SUPER_POD_ID = "0"


def default_board_id() -> str:
    """board_id the pre-1.0 MindSpore tool wrote: 0x002f on aarch64 (A+K) hosts, 0x0000 on x86_64 (A+X)."""
    return "0x002f" if platform.machine() == "aarch64" else "0x0000"


# A server_id names a host (an IPv4/IPv6 address or a host name) and becomes part of file
# names (gen-rank-table's hccl_<devices>_<server>.json) and of launch commands: nothing else
# is accepted -- no path separator, quote, shell character, control character or surrogate.
_SERVER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,252}", re.ASCII)
_BOARD_ID = re.compile(r"0x[0-9A-Fa-f]{1,8}", re.ASCII)


def _shown(value: object) -> str:
    """A value for an error line: repr escapes control characters and lone surrogates."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _require_count(value: object, what: str) -> None:
    # bool is an int subclass; True as a device id would be a bug upstream, not a device.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise HcclError(f"{what} must be a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class Device:
    """One NPU: its physical id on its server, its NIC address, its global rank.

    super_device_id and device_port belong to the 1.2 (super pod) layout; None means
    "the documented default" (super_device_id = device_id, device_port = 16666).
    """
    device_id: int
    device_ip: str
    rank_id: int
    super_device_id: Optional[int] = None
    device_port: Optional[int] = None

    def __post_init__(self) -> None:
        _require_count(self.device_id, "device_id")
        _require_count(self.rank_id, f"device {self.device_id}: rank_id")
        if parse_ipv4(self.device_ip) is None:
            raise HcclError(f"device {self.device_id}: {self.device_ip!r} is not a valid IPv4 address")
        if self.super_device_id is not None:
            _require_count(self.super_device_id, f"device {self.device_id}: super_device_id")
        if self.device_port is not None:
            _require_count(self.device_port, f"device {self.device_id}: device_port")
            if not 0 < self.device_port < 65536:
                raise HcclError(f"device {self.device_id}: device_port {self.device_port} is not a TCP port")

    @property
    def effective_super_device_id(self) -> int:
        return self.device_id if self.super_device_id is None else self.super_device_id

    @property
    def effective_device_port(self) -> int:
        return DEFAULT_DEVICE_PORT if self.device_port is None else self.device_port


@dataclass(frozen=True)
class Server:
    """One host and its devices in rank order.

    host_ip and super_pod_id belong to the 1.2 layout; None means the documented default
    (host_ip = server_id, super_pod_id = "0").
    """
    server_id: str
    devices: Tuple[Device, ...]
    host_ip: Optional[str] = None
    super_pod_id: Optional[str] = None
    host_nic_ip: str = "reserve"

    def __post_init__(self) -> None:
        object.__setattr__(self, "devices", tuple(self.devices))
        if not isinstance(self.server_id, str) or not self.server_id.strip():
            raise HcclError(f"server_id must be a non-empty string, got {_shown(self.server_id)}")
        if not _SERVER_ID.fullmatch(self.server_id):
            raise HcclError(f"server_id {_shown(self.server_id)}: not a host address or name (letters, digits "
                            "and . _ : - only)")
        if not self.devices:
            raise HcclError(f"server {self.server_id}: has no devices")
        for device in self.devices:
            if not isinstance(device, Device):
                raise HcclError(f"server {self.server_id}: {device!r} is not a Device")
        if self.host_ip is not None and parse_ipv4(self.host_ip) is None:
            raise HcclError(f"server {self.server_id}: host_ip {self.host_ip!r} is not a valid IPv4 address")
        if self.super_pod_id is not None and (not isinstance(self.super_pod_id, str) or not self.super_pod_id):
            raise HcclError(f"server {self.server_id}: super_pod_id must be a non-empty string")

    @property
    def device_ids(self) -> Tuple[int, ...]:
        return tuple(d.device_id for d in self.devices)

    @property
    def effective_host_ip(self) -> str:
        return self.server_id if self.host_ip is None else self.host_ip

    @property
    def effective_super_pod_id(self) -> str:
        return DEFAULT_SUPER_POD_ID if self.super_pod_id is None else self.super_pod_id


@dataclass(frozen=True)
class Format0xHeader:
    """Top-level fields of the pre-1.0 MindSpore layout that carry no per-device information."""
    board_id: str = field(default_factory=default_board_id)
    chip_info: str = "910"
    deploy_mode: str = "lab"
    group_name: str = ""
    para_plane_nic_location: str = "device"

    def __post_init__(self) -> None:
        if not isinstance(self.board_id, str) or not _BOARD_ID.fullmatch(self.board_id):
            raise HcclError(f"board_id {_shown(self.board_id)}: expected a hex number such as 0x0000 or 0x002f")


@dataclass(frozen=True)
class RankTable:
    """Servers in order, each with its devices; `fmt` is the layout it is written in."""
    servers: Tuple[Server, ...]
    fmt: str = DEFAULT_FORMAT
    status: str = "completed"
    header_0x: Format0xHeader = field(default_factory=Format0xHeader)

    def __post_init__(self) -> None:
        object.__setattr__(self, "servers", tuple(self.servers))
        if self.fmt not in FORMATS:
            raise HcclError(f"unknown rank table format {self.fmt!r} (known: {', '.join(FORMATS)})")
        if not self.servers:
            raise HcclError("a rank table needs at least one server")
        for server in self.servers:
            if not isinstance(server, Server):
                raise HcclError(f"{server!r} is not a Server")

    @property
    def rank_size(self) -> int:
        return sum(len(s.devices) for s in self.servers)

    @property
    def server_count(self) -> int:
        return len(self.servers)

    def ranks(self) -> Iterator[Tuple[Server, Device]]:
        """(server, device) pairs sorted by rank_id."""
        pairs = [(s, d) for s in self.servers for d in s.devices]
        return iter(sorted(pairs, key=lambda pair: pair[1].rank_id))

    def rank(self, rank_id: int) -> Tuple[Server, Device]:
        """The server and device holding `rank_id`; KeyError if none does."""
        for server in self.servers:
            for device in server.devices:
                if device.rank_id == rank_id:
                    return server, device
        raise KeyError(rank_id)

    def summary(self) -> str:
        """One line: format, servers, devices, ranks."""
        ranks = sorted(d.rank_id for s in self.servers for d in s.devices)
        span = f"ranks {ranks[0]}-{ranks[-1]}" if len(ranks) > 1 else f"rank {ranks[0]}"
        servers = f"{self.server_count} server{'s' if self.server_count != 1 else ''}"
        devices = f"{self.rank_size} device{'s' if self.rank_size != 1 else ''}"
        return f"format {self.fmt}, {servers}, {devices}, {span}"


def renumbered(servers: Sequence[Server]) -> Tuple[Server, ...]:
    """Same servers with rank ids 0..N-1 given in server order, then device order."""
    out = []
    next_rank = 0
    for server in servers:
        devices = tuple(replace(device, rank_id=next_rank + i) for i, device in enumerate(server.devices))
        next_rank += len(devices)
        out.append(replace(server, devices=devices))
    return tuple(out)
