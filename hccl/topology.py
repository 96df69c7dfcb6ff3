"""Rules a rank table must follow before HCCL will accept it."""
from __future__ import annotations

from typing import Dict, Sequence, Tuple

from hccl.errors import HcclError
from hccl.model import RankTable

DEVICES_PER_SERVER = 8          # Atlas 800 training server: two groups of four NPUs
ALLOWED_SERVER_SIZES = (1, 2, 4, 8)
DEVICE_GROUPS = (range(0, 4), range(4, 8))
RELAX = "--no-topology-check relaxes this"


def check_server_devices(server_id: str, device_ids: Sequence[int]) -> None:
    """HCCL's placement rule for the devices one server contributes."""
    shown = ",".join(str(d) for d in device_ids)
    outside = [d for d in device_ids if not 0 <= d < DEVICES_PER_SERVER]
    if outside:
        raise HcclError(f"server {server_id}: device {outside[0]} is not one of 0-7 ({RELAX})")
    count = len(device_ids)
    if count not in ALLOWED_SERVER_SIZES:
        raise HcclError(f"server {server_id}: {count} devices ({shown}); HCCL needs 1, 2, 4 or 8 on one server"
                        f" ({RELAX})")
    if count in (2, 4) and not any(all(d in group for d in device_ids) for group in DEVICE_GROUPS):
        raise HcclError(f"server {server_id}: devices {shown} span both groups; {count} devices must all be"
                        f" within 0-3 or within 4-7 ({RELAX})")


def validate(table: RankTable, topology_check: bool = True) -> None:
    """Raise HcclError on the first rule `table` breaks.

    Always: status "completed"; server ids unique; device ids unique per server; device
    addresses unique; rank ids exactly 0..N-1; (1.2) super_device_id unique per super pod.
    With topology_check: 1, 2, 4 or 8 devices among 0-7 per server, 2 or 4 within 0-3 or
    4-7, and 8 on every server of a multi-server table.
    """
    if table.status != "completed":
        raise HcclError(f"status is {table.status!r}, HCCL only starts from a 'completed' table")
    seen_servers: Dict[str, int] = {}
    owner_of_ip: Dict[str, Tuple[str, int]] = {}
    owner_of_rank: Dict[int, Tuple[str, int]] = {}
    owner_of_super: Dict[Tuple[str, int], Tuple[str, int]] = {}
    for index, server in enumerate(table.servers):
        sid = server.server_id
        if sid in seen_servers:
            raise HcclError(f"server {sid} is listed twice (entries {seen_servers[sid]} and {index})")
        seen_servers[sid] = index
        device_seen = set()
        for device in server.devices:
            here = (sid, device.device_id)
            if device.device_id in device_seen:
                raise HcclError(f"server {sid}: device {device.device_id} is listed twice")
            device_seen.add(device.device_id)
            if device.device_ip in owner_of_ip:
                other = owner_of_ip[device.device_ip]
                raise HcclError(f"server {sid}: device {device.device_id} has address {device.device_ip},"
                                f" already used by device {other[1]} of server {other[0]}")
            owner_of_ip[device.device_ip] = here
            if device.rank_id in owner_of_rank:
                other = owner_of_rank[device.rank_id]
                raise HcclError(f"server {sid}: device {device.device_id} has rank {device.rank_id},"
                                f" already given to device {other[1]} of server {other[0]}")
            owner_of_rank[device.rank_id] = here
            if table.fmt == "1.2":
                key = (server.effective_super_pod_id, device.effective_super_device_id)
                if key in owner_of_super:
                    other = owner_of_super[key]
                    raise HcclError(f"server {sid}: device {device.device_id} has super_device_id {key[1]} in super"
                                    f" pod {key[0]}, already device {other[1]} of server {other[0]}'s"
                                    f" (give each host its own --super-pod-id or --super-device-ids)")
                owner_of_super[key] = here
    missing = sorted(set(range(table.rank_size)) - set(owner_of_rank))
    if missing:
        raise HcclError(f"rank ids must be 0-{table.rank_size - 1}, but rank {missing[0]} is missing"
                        f" (highest is {max(owner_of_rank)})")
    if not topology_check:
        return
    for server in table.servers:
        check_server_devices(server.server_id, server.device_ids)
    if table.server_count > 1:
        for server in table.servers:
            if len(server.devices) != DEVICES_PER_SERVER:
                raise HcclError(f"server {server.server_id}: has {len(server.devices)} devices; in a multi-server"
                                f" table every server needs all 8 ({RELAX})")
