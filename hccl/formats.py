"""The three JSON layouts of a rank table: to and from plain JSON objects.

- "1.0": MindSpore model_zoo hccl_tools.py / merge_hccl.py and CANN's "template 1";
- "1.2": CANN's super-pod layout (host_ip, super_device_id, device_port, super_pod_list);
- "0.x": the pre-1.0 MindSpore layout (board_id, chip_info, group_list[].instance_list[]).

Key order follows the tools that wrote each layout, since dumps() must match them byte
for byte; every value is a string, as HCCL reads them.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Mapping, Optional

from hccl.errors import HcclError
from hccl.model import Device, Format0xHeader, RankTable, Server


# ---------------------------------------------------------------------------- writing

def to_json(table: RankTable) -> Dict[str, Any]:
    """Plain JSON object of `table` in its own layout (table.fmt)."""
    if table.fmt == "1.0":
        return _to_json_1_0(table)
    if table.fmt == "1.2":
        return _to_json_1_2(table)
    return _to_json_0x(table)


def _to_json_1_0(table: RankTable) -> Dict[str, Any]:
    return {
        "version": "1.0",
        "server_count": str(table.server_count),
        "server_list": [
            {
                "server_id": server.server_id,
                "device": [{"device_id": str(d.device_id), "device_ip": d.device_ip, "rank_id": str(d.rank_id)}
                           for d in server.devices],
                "host_nic_ip": server.host_nic_ip,
            }
            for server in table.servers
        ],
        "status": table.status,
    }


def _to_json_1_2(table: RankTable) -> Dict[str, Any]:
    pods: "OrderedDict[str, List[Dict[str, str]]]" = OrderedDict()
    for server in table.servers:
        pods.setdefault(server.effective_super_pod_id, []).append({"server_id": server.server_id})
    return {
        "version": "1.2",
        "server_count": str(table.server_count),
        "server_list": [
            {
                "server_id": server.server_id,
                "host_ip": server.effective_host_ip,
                "device": [{"device_id": str(d.device_id),
                            "super_device_id": str(d.effective_super_device_id),
                            "device_ip": d.device_ip,
                            "device_port": str(d.effective_device_port),
                            "rank_id": str(d.rank_id)}
                           for d in server.devices],
                "host_nic_ip": server.host_nic_ip,
            }
            for server in table.servers
        ],
        "status": table.status,
        "super_pod_list": [{"super_pod_id": pod_id, "server_list": members} for pod_id, members in pods.items()],
    }


def _to_json_0x(table: RankTable) -> Dict[str, Any]:
    header = table.header_0x
    instances = [
        {"devices": [{"device_id": str(d.device_id), "device_ip": d.device_ip}],
         "rank_id": str(d.rank_id),
         "server_id": server.server_id}
        for server in table.servers for d in server.devices
    ]
    # One NIC per device id, named eth<id>, as the old tool did; listed once across servers.
    nic_names: List[str] = []
    for server in table.servers:
        for device in server.devices:
            name = f"eth{device.device_id}"
            if name not in nic_names:
                nic_names.append(name)
    return {
        "board_id": header.board_id,
        "chip_info": header.chip_info,
        "deploy_mode": header.deploy_mode,
        "group_count": "1",
        "group_list": [{
            "device_num": str(table.rank_size),
            "server_num": str(table.server_count),
            "group_name": header.group_name,
            "instance_count": str(table.rank_size),
            "instance_list": instances,
        }],
        "para_plane_nic_location": header.para_plane_nic_location,
        "para_plane_nic_name": nic_names,
        "para_plane_nic_num": str(len(nic_names)),
        "status": table.status,
    }


# ---------------------------------------------------------------------------- reading

def detect_format(obj: Any) -> str:
    """"1.0", "1.2" or "0.x"; HcclError if `obj` is no rank table."""
    if not isinstance(obj, dict):
        raise HcclError(f"top level is a JSON {_json_type(obj)}, not an object")
    if "version" in obj:
        version = obj["version"]
        if version in ("1.0", "1.2"):
            return version
        raise HcclError(f"version {version!r} is not supported (1.0, 1.2, or pre-1.0 with group_list)")
    if "group_list" in obj:
        return "0.x"
    raise HcclError("not a rank table: no 'version' or 'group_list' key")


def from_json(obj: Any) -> RankTable:
    """RankTable from a JSON object in any of the three layouts (HcclError naming the bad key)."""
    fmt = detect_format(obj)
    if fmt == "0.x":
        return _from_json_0x(obj)
    return _from_json_1_x(obj, fmt)


def _from_json_1_x(obj: Mapping[str, Any], fmt: str) -> RankTable:
    server_list = _list(obj, "server_list", "")
    pod_of: Dict[str, str] = {}
    if fmt == "1.2" and "super_pod_list" in obj:
        for i, pod in enumerate(_list(obj, "super_pod_list", "")):
            where = f"super_pod_list[{i}]"
            pod = _object(pod, where)
            pod_id = _string(pod, "super_pod_id", where)
            for j, member in enumerate(_list(pod, "server_list", where)):
                member_where = f"{where}.server_list[{j}]"
                server_id = _string(_object(member, member_where), "server_id", member_where)
                if server_id in pod_of:
                    raise HcclError(f"{member_where}: server {server_id} is already in super pod {pod_of[server_id]}")
                pod_of[server_id] = pod_id
    servers = []
    for i, raw_server in enumerate(server_list):
        where = f"server_list[{i}]"
        raw_server = _object(raw_server, where)
        server_id = _string(raw_server, "server_id", where)
        devices = []
        for j, raw_device in enumerate(_list(raw_server, "device", where)):
            device_where = f"{where}.device[{j}]"
            raw_device = _object(raw_device, device_where)
            devices.append(_device(raw_device, device_where, with_rank=True, fmt=fmt))
        servers.append(_server(
            server_id, devices, where,
            host_ip=_optional_string(raw_server, "host_ip", where) if fmt == "1.2" else None,
            super_pod_id=pod_of.get(server_id),
            host_nic_ip=_optional_string(raw_server, "host_nic_ip", where) or "reserve",
        ))
    if not servers:
        raise HcclError("server_list: lists no servers")
    known = {s.server_id for s in servers}
    strays = [server_id for server_id in pod_of if server_id not in known]
    if strays:
        raise HcclError(f"super_pod_list: server {strays[0]} is not in server_list")
    if "server_count" in obj:
        _require_count_matches(obj, "server_count", "", len(servers), "servers in server_list")
    return _table(servers, fmt, status=_optional_string(obj, "status", "") or "")


def _from_json_0x(obj: Mapping[str, Any]) -> RankTable:
    groups = _list(obj, "group_list", "")
    if len(groups) != 1:
        raise HcclError(f"group_list: has {len(groups)} groups; only single-group tables are supported")
    if "group_count" in obj:
        _require_count_matches(obj, "group_count", "", len(groups), "groups in group_list")
    group = _object(groups[0], "group_list[0]")
    by_server: "OrderedDict[str, List[Device]]" = OrderedDict()
    instances = _list(group, "instance_list", "group_list[0]")
    for i, raw_instance in enumerate(instances):
        where = f"group_list[0].instance_list[{i}]"
        raw_instance = _object(raw_instance, where)
        server_id = _string(raw_instance, "server_id", where)
        rank_id = _count(raw_instance, "rank_id", where)
        raw_devices = _field(raw_instance, "devices", where)
        if isinstance(raw_devices, dict):  # some old generators wrote the one device as an object
            raw_devices = [raw_devices]
        if not isinstance(raw_devices, list) or len(raw_devices) != 1:
            raise HcclError(f"{where}.devices: expected a list with exactly one device")
        device_where = f"{where}.devices[0]"
        device = _device(_object(raw_devices[0], device_where), device_where, with_rank=False, fmt="0.x")
        by_server.setdefault(server_id, []).append(
            Device(device.device_id, device.device_ip, rank_id))
    servers = [_server(server_id, devices, f"server {server_id}") for server_id, devices in by_server.items()]
    for key, actual, what in (("instance_count", len(instances), "instances in instance_list"),
                              ("device_num", len(instances), "instances in instance_list"),
                              ("server_num", len(servers), "distinct server_id values")):
        if key in group:
            _require_count_matches(group, key, "group_list[0]", actual, what)
    defaults = Format0xHeader()
    header = Format0xHeader(
        board_id=_optional_string(obj, "board_id", "") or defaults.board_id,
        chip_info=_optional_string(obj, "chip_info", "") or defaults.chip_info,
        deploy_mode=_optional_string(obj, "deploy_mode", "") or defaults.deploy_mode,
        group_name=_optional_string(group, "group_name", "group_list[0]") or "",
        para_plane_nic_location=(_optional_string(obj, "para_plane_nic_location", "")
                                 or defaults.para_plane_nic_location),
    )
    return _table(servers, "0.x", status=_optional_string(obj, "status", "") or "", header_0x=header)


def _device(raw: Mapping[str, Any], where: str, with_rank: bool, fmt: str) -> Device:
    device_id = _count(raw, "device_id", where)
    device_ip = _string(raw, "device_ip", where)
    rank_id = _count(raw, "rank_id", where) if with_rank else 0
    super_device_id = _optional_count(raw, "super_device_id", where) if fmt == "1.2" else None
    device_port = _optional_count(raw, "device_port", where) if fmt == "1.2" else None
    try:
        return Device(device_id, device_ip, rank_id, super_device_id, device_port)
    except HcclError as err:
        raise HcclError(f"{where}: {err}") from None


def _server(server_id: str, devices: List[Device], where: str, **extra: Any) -> Server:
    try:
        return Server(server_id, tuple(devices), **extra)
    except HcclError as err:
        raise HcclError(f"{where}: {err}") from None


def _table(servers: List[Server], fmt: str, status: str, **extra: Any) -> RankTable:
    if not servers:
        raise HcclError("the table lists no servers")
    return RankTable(tuple(servers), fmt=fmt, status=status, **extra)


# ---------------------------------------------------------------------------- field access

def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _path(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _field(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise HcclError(f"{where or 'top level'}: missing {key!r}")
    return obj[key]


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise HcclError(f"{where}: expected an object, got a JSON {_json_type(value)}")
    return value


def _list(obj: Mapping[str, Any], key: str, where: str) -> List[Any]:
    value = _field(obj, key, where)
    if not isinstance(value, list):
        raise HcclError(f"{_path(where, key)}: expected an array, got a JSON {_json_type(value)}")
    return value


def _string(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = _field(obj, key, where)
    if not isinstance(value, str):
        raise HcclError(f"{_path(where, key)}: expected a string, got a JSON {_json_type(value)}")
    return value


def _optional_string(obj: Mapping[str, Any], key: str, where: str) -> Optional[str]:
    return _string(obj, key, where) if key in obj else None


def _count(obj: Mapping[str, Any], key: str, where: str) -> int:
    """A non-negative integer written as a digit string (or, as merge_hccl.py wrote rank_id, a number)."""
    value = _field(obj, key, where)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    raise HcclError(f"{_path(where, key)}: {value!r} is not a non-negative integer")


def _optional_count(obj: Mapping[str, Any], key: str, where: str) -> Optional[int]:
    return _count(obj, key, where) if key in obj else None


def _require_count_matches(obj: Mapping[str, Any], key: str, where: str, actual: int, what: str) -> None:
    declared = _count(obj, key, where)
    if declared != actual:
        raise HcclError(f"{_path(where, key)}: says {declared} but there are {actual} {what}")
