"""Which physical devices a generated table uses: --visible-devices and --device-num.

As in MindSpore's hccl_tools.py, --device-num "[a,b)" picks logical indexes a..b-1 and
--visible-devices maps a logical index to the physical device id (a container that sees
NPUs 4-7 has visible devices "4,5,6,7" and uses --device-num "[0,4)").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Tuple

from hccl.errors import HcclError

DEFAULT_VISIBLE_DEVICES = "0,1,2,3,4,5,6,7"
DEFAULT_DEVICE_NUM = "[0,8)"

_HALF_OPEN = re.compile(r"\[\s*([0-9]{1,4})\s*,\s*([0-9]{1,4})\s*\)", re.ASCII)
_DEVICE_ID = re.compile(r"[0-9]{1,5}", re.ASCII)


@dataclass(frozen=True)
class DeviceSelection:
    indexes: Tuple[int, ...]      # logical indexes from --device-num; they name the output file
    device_ids: Tuple[int, ...]   # physical ids, visible_devices[index]


def parse_visible_devices(text: str, flag: str = "--visible-devices") -> Tuple[int, ...]:
    """"0,1,2" -> (0, 1, 2); HcclError naming `flag` on anything else."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise HcclError(f"{flag}: empty; expected device ids like 0,1,2,3")
    ids = []
    for item in items:
        if not _DEVICE_ID.fullmatch(item):
            raise HcclError(f"{flag} {text!r}: {item!r} is not a device id")
        device_id = int(item)
        if device_id in ids:
            raise HcclError(f"{flag} {text!r}: device {device_id} is listed twice")
        ids.append(device_id)
    return tuple(ids)


def parse_device_num(text: str, flag: str = "--device-num") -> Tuple[int, int]:
    """"[0,4)" -> (0, 4): a non-empty half-open range of logical indexes."""
    match = _HALF_OPEN.fullmatch(text.strip())
    if match is None:
        raise HcclError(f"{flag} {text!r}: expected a half-open range like [0,8)")
    first, last = int(match.group(1)), int(match.group(2))
    if first >= last:
        raise HcclError(f"{flag} {text!r}: the range is empty (first must be below last)")
    return first, last


def select_devices(visible_devices: str = DEFAULT_VISIBLE_DEVICES,
                   device_num: str = DEFAULT_DEVICE_NUM) -> DeviceSelection:
    visible = parse_visible_devices(visible_devices)
    first, last = parse_device_num(device_num)
    if last > len(visible):
        raise HcclError(f"--device-num {device_num!r}: reaches index {last - 1} but --visible-devices"
                        f" lists only {len(visible)} devices")
    indexes = tuple(range(first, last))
    return DeviceSelection(indexes, tuple(visible[i] for i in indexes))
