"""IPv4 addresses: validating device NIC addresses, ordering server ids, finding this host's address."""
from __future__ import annotations

import ipaddress
import socket
from typing import Optional, Tuple, Union

from hccl.errors import HcclError

# TEST-NET-1 (RFC 5737): connecting a UDP socket there sends nothing but makes the kernel
# pick the source address of the default route, i.e. the address other hosts reach us by.
_ROUTE_PROBE = ("192.0.2.1", 9)


def parse_ipv4(text: str) -> Optional[ipaddress.IPv4Address]:
    """The address if `text` is a usable unicast dotted-quad IPv4 address, else None."""
    if not isinstance(text, str):
        return None
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return None
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return None
    return address


def is_ipv4(text: str) -> bool:
    return parse_ipv4(text) is not None


def require_ipv4(text: str, where: str) -> str:
    """Return `text` unchanged if it is a usable IPv4 address, else raise HcclError naming `where`."""
    if parse_ipv4(text) is None:
        raise HcclError(f"{where}: {text!r} is not a valid IPv4 address")
    return text


def server_sort_key(server_id: str) -> Tuple[int, Union[int, str]]:
    """Order MindSpore expects servers in: IPv4 ids numerically (10.0.0.9 < 10.0.0.10), then other ids by name."""
    address = parse_ipv4(server_id)
    if address is not None:
        return (0, int(address))
    return (1, server_id)


def primary_ipv4() -> str:
    """This host's primary IPv4 address (source address of the default route, else the host name's address)."""
    candidates = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_ROUTE_PROBE)
            candidates.append(probe.getsockname()[0])
    except OSError:
        pass  # no default route: fall back to name resolution below
    try:
        candidates.append(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    usable = [ip for ip in candidates if is_ipv4(ip)]
    # Prefer an address other hosts can reach over Debian's 127.0.1.1 host-name entry.
    for ip in usable:
        if not ipaddress.IPv4Address(ip).is_loopback:
            return ip
    if usable:
        return usable[0]
    raise HcclError("--server-ip: cannot find this host's IPv4 address; pass --server-ip")
