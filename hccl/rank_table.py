"""Rank tables: build one host's, merge many, validate, and read or write any of the three layouts.

    from hccl import hccn_conf, rank_table
    ips = hccn_conf.query([0, 1, 2, 3, 4, 5, 6, 7], "/etc/hccn.conf")
    table = rank_table.build("10.0.0.1", ips)
    rank_table.validate(table)
    rank_table.write(table, "hccl_8p_01234567_10.0.0.1.json")
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Iterable, Mapping, Optional, Sequence

from hccl import formats, strict_json
from hccl.addresses import server_sort_key
from hccl.atomic_file import write_text_atomically
from hccl.errors import HcclError
from hccl.text_file import read_text
from hccl.model import (DEFAULT_FORMAT, FORMATS, Device, Format0xHeader, RankTable, Server,
                        renumbered)
from hccl.topology import validate

__all__ = ["Device", "Server", "RankTable", "Format0xHeader", "FORMATS", "HcclError",
           "build", "merge", "validate", "dumps", "loads", "write", "load",
           "single_host_filename", "merged_filename"]

DEFAULT_DEVICES = (0, 1, 2, 3, 4, 5, 6, 7)


def build(server_id: str, ips: Mapping[int, str], devices: Iterable[int] = DEFAULT_DEVICES,
          fmt: str = DEFAULT_FORMAT, *, host_ip: Optional[str] = None,
          super_device_ids: Optional[Sequence[int]] = None, device_port: Optional[int] = None,
          super_pod_id: Optional[str] = None, board_id: Optional[str] = None) -> RankTable:
    """One server's table: `devices` (physical ids) get ranks 0..N-1 in the order given.

    The keyword arguments only show in the layouts that have them: host_ip,
    super_device_ids (one per device), device_port and super_pod_id in "1.2"
    (defaults: server_id, the device ids, 16666, "0"), board_id in "0.x" (default by CPU
    architecture). Does not check topology: call validate().
    """
    devices = list(devices)
    if not devices:
        raise HcclError("no devices selected")
    if super_device_ids is not None and len(super_device_ids) != len(devices):
        raise HcclError(f"--super-device-ids: {len(super_device_ids)} ids for {len(devices)} devices")
    built = []
    for rank_id, device_id in enumerate(devices):
        if device_id not in ips:
            known = ",".join(str(d) for d in sorted(ips)) or "none"
            raise HcclError(f"device {device_id} has no address (addresses known for devices: {known})")
        built.append(Device(device_id, ips[device_id], rank_id,
                            super_device_id=None if super_device_ids is None else super_device_ids[rank_id],
                            device_port=device_port))
    server = Server(server_id, tuple(built), host_ip=host_ip, super_pod_id=super_pod_id)
    header = Format0xHeader() if board_id is None else Format0xHeader(board_id=board_id)
    return RankTable((server,), fmt=fmt, header_0x=header)


def merge(tables: Sequence[RankTable], keep_order: bool = False, fmt: Optional[str] = None) -> RankTable:
    """One table holding every server of `tables`, rank ids renumbered 0..N-1.

    Servers are sorted by server_id (IPv4 ids numerically), the order MindSpore expects,
    unless keep_order. The result is in `fmt`, default the first table's layout.
    """
    if not tables:
        raise HcclError("nothing to merge")
    servers = [server for table in tables for server in table.servers]
    seen = set()
    for server in servers:
        if server.server_id in seen:
            raise HcclError(f"server {server.server_id} appears in more than one table")
        seen.add(server.server_id)
    if not keep_order:
        servers.sort(key=lambda s: server_sort_key(s.server_id))
    first = tables[0]
    return replace(first, servers=renumbered(servers), fmt=fmt or first.fmt, status="completed")


def dumps(table: RankTable) -> str:
    """Exactly what `json.dump(obj, f, indent=4)` writes (MindSpore's tools), no trailing newline."""
    return json.dumps(formats.to_json(table), indent=4)


# No field of a rank table needs more digits (ids, ports, counts); Python's own limit
# (4300 digits) would raise a ValueError with advice meant for programmers.
MAX_INT_DIGITS = 20


def loads(text: str) -> RankTable:
    """RankTable from JSON text in any of the three layouts."""
    try:
        obj = strict_json.loads(text, MAX_INT_DIGITS)
    except strict_json.StrictJsonError as err:
        raise HcclError(str(err)) from None
    except json.JSONDecodeError as err:
        raise HcclError(f"line {err.lineno} column {err.colno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise HcclError("JSON nested too deeply") from None
    except ValueError as err:  # limits of int() met inside the decoder
        raise HcclError(f"not valid JSON ({err})") from None
    return formats.from_json(obj)


def load(path: "os.PathLike[str] | str") -> RankTable:
    """loads() the file at `path`; every HcclError names the file."""
    path = os.fspath(path)
    text = read_text(path, "a rank table")
    try:
        return loads(text)
    except HcclError as err:
        raise HcclError(f"{path}: {err}") from None


def write(table: RankTable, path: "os.PathLike[str] | str", force: bool = False) -> str:
    """dumps() into `path` atomically; an existing file is an HcclError unless force. Returns the path."""
    return write_text_atomically(path, dumps(table), force=force)


def single_host_filename(indexes: Sequence[int], server_id: str) -> str:
    """hccl_tools.py's name: hccl_8p_01234567_10.0.0.1.json (logical indexes of --device-num)."""
    return f"hccl_{len(indexes)}p_{''.join(str(i) for i in indexes)}_{server_id}.json"


def merged_filename(table: RankTable) -> str:
    """merge_hccl.py's name: hccl_2s_16p.json."""
    return f"hccl_{table.server_count}s_{table.rank_size}p.json"
