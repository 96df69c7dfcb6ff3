"""gen-rank-table: write the HCCL rank table (RANK_TABLE_FILE) of Ascend hosts.

Usage:
  gen-rank-table [--hccn-conf PATH] [--visible-devices 0,1,2,3,4,5,6,7] [--device-num "[0,8)"]
                 [--server-ip IP] [-o FILE | --output-dir DIR] [--format 1.0|1.2|0.x]
                 [--force] [--no-topology-check]
                 [--host-ip IP] [--super-device-ids IDS] [--device-port PORT] [--super-pod-id ID]
                 [--board-id HEX]
  gen-rank-table merge FILE... [-o FILE | --output-dir DIR] [--keep-order] [--format F]
                 [--force] [--no-topology-check]
  gen-rank-table check FILE [--no-topology-check]

Generate (the default; the word `generate` may be given but is not needed) writes the
table of this host, the same bytes as MindSpore model_zoo's hccl_tools.py:
  --hccn-conf PATH        hccn.conf to read `address_N=IP` lines from (default
                          /etc/hccn.conf). When `hccn_tool` is on PATH, each device's
                          address comes from `hccn_tool -i N -ip -g` instead, and the file
                          is only read if the tool gives no `ipaddr:` line.
  --visible-devices IDS   physical device ids as this system sees them, in logical order
                          (default 0,1,2,3,4,5,6,7). In a container that sees NPUs 4-7 give
                          "4,5,6,7" and --device-num "[0,4)".
  --device-num "[a,b)"    logical indexes a..b-1 of --visible-devices to use (default
                          "[0,8)"); they name the output file.
  --server-ip IP          server_id of this host (default: this host's primary IPv4
                          address, the source address of its default route).
  -o FILE, --output FILE  where to write; default DIR/hccl_{N}p_{indexes}_{server ip}.json,
                          e.g. hccl_8p_01234567_10.0.0.1.json.
  --output-dir DIR        directory for the default file name (default: current directory).
  --format F              1.0 (default): version/server_count/server_list/status.
                          1.2: CANN super-pod layout, adds host_ip (--host-ip, default the
                          server ip), super_device_id (--super-device-ids, one per device,
                          default the device ids), device_port (--device-port, default
                          16666) and super_pod_list (--super-pod-id, default "0").
                          0.x: the pre-1.0 MindSpore layout (board_id from --board-id,
                          default 0x002f on aarch64 and 0x0000 elsewhere; chip_info 910,
                          deploy_mode lab, group_list[].instance_list[], para_plane_nic_*).
                          These flags are refused with the other layouts.
  --force                 overwrite an existing output file (only a regular file, or a link
                          to one: the link is replaced, not its target).
  --no-topology-check     allow device sets HCCL's placement rules forbid (below).
The underscore spellings of hccl_tools.py (--device_num, --visible_devices, --server_ip)
are accepted too.

merge: one table for many hosts from their single-host tables (any layout). Servers are
sorted by server_id (IPv4 ids numerically: 10.0.0.9 before 10.0.0.10), the order
MindSpore needs, unless --keep-order keeps the order of the files; rank_id is renumbered
0..N-1 in that order. Output: -o FILE, or DIR/hccl_{S}s_{N}p.json (e.g. hccl_2s_16p.json).
The layout is the first file's unless --format is given.

check: validate a table in any layout and print one line: the format, servers, devices
and ranks.

Rules checked before anything is written: every selected device has an address; addresses
are valid IPv4 and unique; device ids unique per server; server ids unique; rank ids
0..N-1; in 1.2, super_device_id unique per super pod. HCCL topology (relaxed by
--no-topology-check): device ids 0-7; 1, 2, 4 or 8 devices on one server, and 2 or 4 must
lie within 0-3 or within 4-7; in a table of several servers each has all 8 devices.

Exit status: 0 written (or valid, for check; one summary line on stdout); 2 bad input:
missing or unreadable file, malformed hccn.conf line, bad address, duplicate device, bad
device list, topology violation, existing output without --force. The error is one line
on stderr naming the file (and line), flag or server; nothing is written (the table goes
to a temporary file that is renamed into place only when complete).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, NoReturn, Optional, Sequence

from hccl import hccn_conf, rank_table
from hccl.addresses import primary_ipv4, require_ipv4
from hccl.device_selection import (DEFAULT_DEVICE_NUM, DEFAULT_VISIBLE_DEVICES, parse_visible_devices,
                                   select_devices)
from hccl.errors import HcclError
from hccl.model import FORMATS
from hccl.topology import check_server_devices

PROG = "gen-rank-table"
EXIT_BAD_INPUT = 2


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as the one stderr line every bad input gets."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # an abbreviation is an error line, never a guess
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{PROG}: {message} (see {PROG} --help)\n")


def _generate_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=PROG, description=__doc__, allow_abbrev=False,
                            formatter_class=argparse.RawDescriptionHelpFormatter, usage=argparse.SUPPRESS)
    parser.add_argument("--hccn-conf", default=hccn_conf.DEFAULT_PATH, metavar="PATH")
    parser.add_argument("--visible-devices", "--visible_devices", dest="visible_devices",
                        default=DEFAULT_VISIBLE_DEVICES, metavar="IDS")
    parser.add_argument("--device-num", "--device_num", dest="device_num", default=DEFAULT_DEVICE_NUM,
                        metavar="[a,b)")
    parser.add_argument("--server-ip", "--server_ip", dest="server_ip", default=None, metavar="IP")
    _add_output_flags(parser)
    parser.add_argument("--format", choices=FORMATS, default="1.0")
    parser.add_argument("--host-ip", metavar="IP")
    parser.add_argument("--super-device-ids", metavar="IDS")
    parser.add_argument("--device-port", type=int, metavar="PORT")
    parser.add_argument("--super-pod-id", metavar="ID")
    parser.add_argument("--board-id", metavar="HEX")
    return parser


def _merge_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=f"{PROG} merge", allow_abbrev=False,
                            description="Merge single-host rank tables into one (see gen-rank-table --help).")
    parser.add_argument("files", nargs="+", metavar="FILE")
    _add_output_flags(parser)
    parser.add_argument("--keep-order", action="store_true", help="keep the servers in the order of the files")
    parser.add_argument("--format", choices=FORMATS, help="layout of the result (default: the first file's)")
    return parser


def _check_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog=f"{PROG} check", allow_abbrev=False,
                            description="Validate a rank table and print a one-line summary.")
    parser.add_argument("file", metavar="FILE")
    parser.add_argument("--no-topology-check", action="store_true")
    return parser


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", metavar="FILE")
    where.add_argument("--output-dir", metavar="DIR")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--no-topology-check", action="store_true")


def _output_path(args: argparse.Namespace, default_name: str) -> str:
    if args.output:
        return args.output
    if args.output_dir is None:
        return default_name
    if not os.path.isdir(args.output_dir):
        raise HcclError(f"--output-dir {args.output_dir}: no such directory")
    return os.path.join(args.output_dir, default_name)


_FORMAT_ONLY_FLAGS = (("host_ip", "--host-ip", "1.2"), ("super_device_ids", "--super-device-ids", "1.2"),
                      ("device_port", "--device-port", "1.2"), ("super_pod_id", "--super-pod-id", "1.2"),
                      ("board_id", "--board-id", "0.x"))


def generate(args: argparse.Namespace) -> int:
    for attribute, flag, fmt in _FORMAT_ONLY_FLAGS:
        # Silently dropping a field the user asked for would hide a wrong --format.
        if getattr(args, attribute) is not None and args.format != fmt:
            raise HcclError(f"{flag} only applies to --format {fmt} (this table is {args.format})")
    selection = select_devices(args.visible_devices, args.device_num)
    # Only an absent --server-ip means "this host": an empty one is a mistake (an unset $VAR), not a request.
    server_ip = require_ipv4(args.server_ip, "--server-ip") if args.server_ip is not None else primary_ipv4()
    if not args.no_topology_check:
        check_server_devices(server_ip, selection.device_ids)  # before touching hccn.conf: clearer error
    host_ip = require_ipv4(args.host_ip, "--host-ip") if args.host_ip is not None else None
    super_ids = (parse_visible_devices(args.super_device_ids, "--super-device-ids")
                 if args.super_device_ids is not None else None)
    if args.device_port is not None and not 0 < args.device_port < 65536:
        raise HcclError(f"--device-port {args.device_port}: not a TCP port (1-65535)")
    if args.super_pod_id is not None and not args.super_pod_id.strip():
        raise HcclError("--super-pod-id: empty")
    path = _output_path(args, rank_table.single_host_filename(selection.indexes, server_ip))
    if not args.force and os.path.lexists(path):
        raise HcclError(f"{path}: already exists (use --force to overwrite)")
    ips = hccn_conf.query(selection.device_ids, args.hccn_conf)
    table = rank_table.build(server_ip, ips, selection.device_ids, fmt=args.format, host_ip=host_ip,
                             super_device_ids=super_ids, device_port=args.device_port,
                             super_pod_id=args.super_pod_id, board_id=args.board_id)
    rank_table.validate(table, topology_check=not args.no_topology_check)
    written = rank_table.write(table, path, force=args.force)
    print(f"{written}: {table.summary()}")
    return 0


def merge(args: argparse.Namespace) -> int:
    tables = [rank_table.load(path) for path in args.files]
    merged = rank_table.merge(tables, keep_order=args.keep_order, fmt=args.format)
    rank_table.validate(merged, topology_check=not args.no_topology_check)
    path = _output_path(args, rank_table.merged_filename(merged))
    written = rank_table.write(merged, path, force=args.force)
    print(f"{written}: {merged.summary()}")
    return 0


def check(args: argparse.Namespace) -> int:
    table = rank_table.load(args.file)
    try:
        rank_table.validate(table, topology_check=not args.no_topology_check)
    except HcclError as err:
        raise HcclError(f"{args.file}: {err}") from None
    print(f"{args.file}: ok, {table.summary()}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args: List[str] = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "merge":
            return merge(_merge_parser().parse_args(args[1:]))
        if args and args[0] == "check":
            return check(_check_parser().parse_args(args[1:]))
        if args and args[0] == "generate":
            args = args[1:]
        return generate(_generate_parser().parse_args(args))
    except HcclError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
