"""Device NIC addresses of this host: /etc/hccn.conf, or `hccn_tool -i N -ip -g` where installed.

hccn.conf holds one `key_N=value` line per setting and device; only `address_N=IP` lines
matter here (netmask_N, netdetect_N, gateway_N, comments ... are ignored):

    address_0=192.98.92.100
    netmask_0=255.255.255.0
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Dict, Iterable, Mapping, Optional

from hccl.addresses import parse_ipv4
from hccl.errors import HcclError
from hccl.text_file import read_text

DEFAULT_PATH = "/etc/hccn.conf"
HCCN_TOOL = "hccn_tool"
HCCN_TOOL_TIMEOUT_S = 10.0

# Device ids are small; the length cap also keeps int() away from pathological inputs.
_ADDRESS_KEY = re.compile(r"address_([0-9]{1,5})", re.ASCII)
_TOOL_IPADDR = re.compile(r"ipaddr\s*:\s*(\S+)")


def parse(text: str, source: str = "hccn.conf") -> Dict[int, str]:
    """Map device id -> IPv4 address from hccn.conf text.

    Raises HcclError ("<source>:<line>: ...") for a malformed `address_` line, an invalid
    address, a device given twice, or one address given to two devices.
    """
    ips: Dict[int, str] = {}
    line_of: Dict[int, int] = {}
    device_of_ip: Dict[str, int] = {}
    for lineno, raw in enumerate(text.lstrip("\ufeff").split("\n"), start=1):
        line = raw.strip()
        if not line.startswith("address_"):
            continue
        where = f"{source}:{lineno}"
        key, sep, value = line.partition("=")
        match = _ADDRESS_KEY.fullmatch(key.strip())
        if not sep or match is None:
            raise HcclError(f"{where}: malformed line {_shorten(line)!r}, expected address_N=IP")
        device_id = int(match.group(1))
        ip = value.strip()
        if parse_ipv4(ip) is None:
            raise HcclError(f"{where}: {_shorten(ip)!r} is not a valid IPv4 address (device {device_id})")
        if device_id in ips:
            raise HcclError(f"{where}: device {device_id} given twice (first on line {line_of[device_id]})")
        if ip in device_of_ip:
            raise HcclError(f"{where}: address {ip} of device {device_id} is already device {device_of_ip[ip]}'s")
        ips[device_id] = ip
        line_of[device_id] = lineno
        device_of_ip[ip] = device_id
    return ips


def read(path: "os.PathLike[str] | str" = DEFAULT_PATH) -> Dict[int, str]:
    """parse() the file at `path`; HcclError naming the file if it is missing or unreadable."""
    path = os.fspath(path)
    text = read_text(path, "an hccn.conf file")
    return parse(text, source=path)


def query(devices: Iterable[int], hccn_conf_path: "os.PathLike[str] | str" = DEFAULT_PATH,
          hccn_tool: Optional[str] = HCCN_TOOL) -> Dict[int, str]:
    """Address of each of `devices`, {device_id: ip}, in the order given.

    Asks `hccn_tool -i N -ip -g` when that tool is on PATH (what the driver reports is
    the truth), else, or when the tool gives no address for some device, reads
    `hccn_conf_path`. HcclError if a device has no address.
    """
    devices = list(devices)
    tool = shutil.which(hccn_tool) if hccn_tool else None
    tool_note = ""
    if tool is not None:
        from_tool = _query_tool(tool, devices)
        if isinstance(from_tool, dict):
            return from_tool
        tool_note = f" (and {from_tool})"
    path = os.fspath(hccn_conf_path)
    try:
        ips = read(path)
    except HcclError as err:
        raise HcclError(f"{err}{tool_note}") from None
    missing = [d for d in devices if d not in ips]
    if missing:
        raise HcclError(f"{path}: no address_{missing[0]}= line for device {missing[0]}"
                        f"{_have(ips)}{tool_note}")
    return {d: ips[d] for d in devices}


def _query_tool(tool: str, devices: Iterable[int]) -> "Dict[int, str] | str":
    """{device: ip} from hccn_tool, or a short reason why the tool gave no answer for some device."""
    ips: Dict[int, str] = {}
    for device_id in devices:
        command = [tool, "-i", str(device_id), "-ip", "-g"]
        shown = f"hccn_tool -i {device_id} -ip -g"
        try:
            done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  errors="replace", timeout=HCCN_TOOL_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return f"{shown} timed out"
        except OSError as err:
            return f"{shown} failed: {err.strerror or err}"
        match = _TOOL_IPADDR.search(done.stdout)
        if done.returncode != 0 or match is None:
            return f"{shown} gave no ipaddr (exit {done.returncode})"
        ip = match.group(1)
        if parse_ipv4(ip) is None:
            raise HcclError(f"{shown}: {_shorten(ip)!r} is not a valid IPv4 address")
        if ip in ips.values():
            other = next(d for d, known in ips.items() if known == ip)
            raise HcclError(f"{shown}: address {ip} of device {device_id} is already device {other}'s")
        ips[device_id] = ip
    return ips


def _have(ips: Mapping[int, str]) -> str:
    if not ips:
        return " (the file has no address_N= lines)"
    return f" (it has devices {','.join(str(d) for d in sorted(ips))})"


def _shorten(text: str, limit: int = 60) -> str:
    # Keeps the error to one readable line whatever the file holds.
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
