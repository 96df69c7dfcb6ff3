"""The scheduler's TCP port: pick a free one, or check that the one asked for is free."""
from __future__ import annotations

import socket

from launcher.errors import LaunchError


def _bind_probe(address: str, port: int) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Same option MindSpore's server sets, so a port in TIME_WAIT from a previous job counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        return sock.getsockname()[1]


def free_port(address: str = "127.0.0.1") -> int:
    return _bind_probe(address, 0)


def check_port(port: int, flag: str = "--sched-port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise LaunchError(f"{flag} {port}: not a TCP port (1..65535)")
    return port


def check_port_free(port: int, address: str = "127.0.0.1", flag: str = "--sched-port") -> int:
    check_port(port, flag)
    try:
        return _bind_probe(address, port)
    except PermissionError:
        raise LaunchError(f"{flag} {port}: not allowed to listen on {address}:{port}") from None
    except OSError as exc:
        raise LaunchError(f"{flag} {port}: port already in use on {address} ({exc.strerror})") from None
