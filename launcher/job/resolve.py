"""From what the user asked (LaunchOptions) to a fully resolved JobSpec.

This is where the launcher looks at the machine: detects the platform, lists devices,
reads hccn.conf or the rank table, picks or checks the scheduler port, checks the entry
script. Every problem is a LaunchError naming the flag or file; nothing is written.
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from launcher.errors import LaunchError
from launcher.job.hang_policy import DEFAULT_FIRST_STEP_TIMEOUT_S, DEFAULT_HANG_TIMEOUT_S, HangPolicy
from launcher.job.host_list import Host, RemoteHostParser, parse_hosts
from launcher.job.job_json import utc_now
from launcher.job.platforms import (
    DEFAULT_HCCN_CONF,
    DEFAULT_MODE,
    MODES,
    check_platform,
    choose_devices,
    detect_platform,
    usable_cpus,
    visible_gpu_ids,
)
from launcher.job.ports import check_port, check_port_free, free_port
from launcher.job.safe_text import check_env_value, refuse_control, visible
from launcher.job.render import check_templates_dir
from launcher.job.spec import DEFAULT_MODULE, Entry, JobSpec, check_env_name

Warn = Callable[[str], None]
MAX_RESTARTS = 1000
MAX_TEE_RANK = 1 << 20
# Linux: a path component of at most NAME_MAX bytes, a whole path of fewer than PATH_MAX.
NAME_MAX = 255
PATH_MAX = 4096


@dataclass(frozen=True)
class LaunchOptions:
    """What a user can ask for; None means "the default" (see launcher.cli for each)."""

    args: tuple[str, ...] = ()
    devices: Optional[int] = None
    visible_devices: Optional[tuple[int, ...]] = None
    hosts: Optional[str] = None
    platform: Optional[str] = None
    mode: Optional[str] = None
    rank_table: Optional[Path] = None
    hccn_conf: Path = DEFAULT_HCCN_CONF
    sched_port: Optional[int] = None
    entry: Optional[Path] = None
    module: Optional[str] = None
    job_dir: Optional[Path] = None
    env: tuple[tuple[str, str], ...] = ()
    bind_cores: bool = True
    max_restarts: int = 0
    templates: Optional[Path] = None
    tee: str = "0"
    python: Optional[str] = None
    topology_check: bool = True
    hang_timeout_s: Optional[float] = DEFAULT_HANG_TIMEOUT_S
    first_step_timeout_s: Optional[float] = DEFAULT_FIRST_STEP_TIMEOUT_S
    # Hosts given as objects (the nodes of a Slurm allocation); --hosts text is then not parsed.
    host_objects: Optional[tuple[Host, ...]] = None
    # Set by --submit for the launch inside the batch job: the same job id, and the files it left.
    job_id: Optional[str] = None
    prepared_files: tuple[str, ...] = ()
    # GPU ids every host offers, as the engine that allocated them says (a Slurm allocation's Gres);
    # None: ask nvidia-smi here.
    gpus_available: Optional[tuple[int, ...]] = None

    def __post_init__(self) -> None:
        if self.entry is not None and self.module is not None:
            raise LaunchError("--entry and --module: give one of them, not both")
        if not 0 <= self.max_restarts <= MAX_RESTARTS:
            raise LaunchError(f"--max-restarts {self.max_restarts}: must be 0..{MAX_RESTARTS}")
        if self.sched_port is not None:
            check_port(self.sched_port)
        try:
            for key, value in self.env:
                check_env_name(key)
                check_env_value(key, value)
            for arg in self.args:
                if "\x00" in arg:
                    raise ValueError(f"training argument {visible(arg, 60)}: contains a NUL byte, which no "
                                     "command line can hold")
            if self.job_dir is not None:
                refuse_control(str(self.job_dir), "--job-dir")
            if self.hosts is not None:
                refuse_control(self.hosts, "--hosts")
        except ValueError as exc:
            raise LaunchError(str(exc)) from None


def new_job_id() -> str:
    """UTC time + a short random suffix: sortable, and unique across launchers started together."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def parse_env_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise LaunchError(f"--env {text[:200]!r}: expected KEY=VALUE")
    try:
        return check_env_name(key), check_env_value(key, value)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None


def parse_tee(text: str) -> Optional[frozenset[int]]:
    """``0,2`` / ``0-3`` / ``all`` / ``none`` -> rank set (None = all ranks)."""
    text = text.strip().lower()
    if text == "all":
        return None
    if text in ("none", ""):
        return frozenset()
    ranks: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise LaunchError(f"--tee {text!r}: expected rank numbers like 0,1 or 0-3, 'all' or 'none'")
        low = int(match.group(1)) if len(match.group(1)) <= 7 else MAX_TEE_RANK + 1
        high = (int(match.group(2)) if len(match.group(2)) <= 7 else MAX_TEE_RANK + 1) if match.group(2) else low
        if high > MAX_TEE_RANK or high < low:
            raise LaunchError(f"--tee {text[:80]!r}: {part.strip()} is not a range of ranks 0..{MAX_TEE_RANK}")
        ranks.update(range(low, high + 1))
    return frozenset(ranks)


def _probe_local(host: Host) -> Host:
    from cpu_env import read_cpu_flags

    return dataclasses.replace(host, cpus=usable_cpus(), cpu_flags=read_cpu_flags())


def resolve_spec(
    options: LaunchOptions,
    *,
    remote_parser: Optional[RemoteHostParser] = None,
    warn: Warn = lambda message: print(f"launch-train: warning: {message}", file=sys.stderr),
) -> JobSpec:
    platform = check_platform(options.platform) if options.platform else detect_platform(options.hccn_conf)
    mode = options.mode or DEFAULT_MODE[platform]
    if mode not in MODES:
        raise LaunchError(f"--mode {mode!r}: unknown start mode (use rank-table, mpirun or dynamic)")
    if mode == "rank-table" and platform != "Ascend":
        raise LaunchError(f"--mode rank-table: rank tables are for Ascend (platform is {platform}); use dynamic")
    if mode == "mpirun" and platform == "CPU":
        warn("--mode mpirun on CPU: MindSpore's CPU build cannot init() communication under mpirun")

    if options.host_objects is not None:
        hosts = tuple(h if not h.local else _probe_local(h) for h in options.host_objects)
    else:
        hosts = tuple(h if not h.local else _probe_local(h) for h in parse_hosts(options.hosts, remote_parser))
    table, table_json, devices = _devices_and_table(options, platform, mode, hosts)
    if platform == "CPU":
        cores = len(hosts[0].cpus) if hosts[0].local else 0
        if cores and len(devices) > cores:
            warn(f"--devices {len(devices)}: more CPU ranks than the {cores} usable cores; ranks will share cores")

    sched_port = None
    if mode == "dynamic":
        first = hosts[0]
        if options.sched_port is not None:
            sched_port = check_port_free(options.sched_port, first.address) if first.local else options.sched_port
        else:
            sched_port = free_port(first.address if first.local else "0.0.0.0")

    for arg in options.args:
        if not arg.startswith("-") and not Path(arg).is_absolute() and os.sep in arg and Path(arg).exists():
            warn(f"training arg {arg!r} is a relative path; ranks run in <job-dir>/LOG<rank>/, "
                 f"so pass {str(Path(arg).resolve())!r}")
    entry = _entry(options)
    job_id = options.job_id or new_job_id()
    job_dir = check_job_dir((options.job_dir if options.job_dir is not None else Path("jobs") / job_id).expanduser())
    from launcher.launch import check_job_dir_free

    check_job_dir_free(job_dir, options.prepared_files)
    templates = check_templates_dir(options.templates) if options.templates is not None else None

    rank_size = len(hosts) * len(devices)
    tee = parse_tee(options.tee)
    tee_ranks = frozenset(range(rank_size)) if tee is None else tee
    outside = sorted(r for r in tee_ranks if r >= rank_size)
    if outside:
        raise LaunchError(f"--tee {options.tee}: the job has ranks 0..{rank_size - 1}")

    try:
        hang = HangPolicy(options.hang_timeout_s, options.first_step_timeout_s)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    try:
        return JobSpec(
            job_id=job_id,
            job_dir=job_dir,
            created=utc_now(),
            hosts=hosts,
            devices=devices,
            platform=platform,
            mode=mode,
            entry=entry,
            python=options.python or sys.executable,
            args=tuple(options.args),
            env=dict(options.env),
            bind_cores=options.bind_cores,
            max_restarts=options.max_restarts,
            templates_dir=templates,
            tee=tee_ranks,
            sched_port=sched_port,
            rank_table=table,
            rank_table_json=table_json,
            hang=hang,
            prepared_files=tuple(options.prepared_files),
        )
    except ValueError as exc:
        raise LaunchError(str(exc)) from None


def check_job_dir(path: Path) -> Path:
    """The absolute job dir, if it can be made: not too long, no file in the way, writable.

    (New or empty -- but for what --submit prepared -- is launch.check_job_dir_free's check.)

    Checked before anything is written, so a bad --job-dir is one line and no half-made job.
    """
    try:
        job_dir = path.resolve()
    except (OSError, RuntimeError) as exc:  # a link loop, an unreadable parent
        raise LaunchError(f"--job-dir {visible(path)}: cannot be resolved ({getattr(exc, 'strerror', None) or exc})") from None
    longest = max((len(os.fsencode(part)) for part in job_dir.parts), default=0)
    if longest > NAME_MAX or len(os.fsencode(str(job_dir))) + len("/LOG0000/ckpt/x.ckpt.tmp") >= PATH_MAX:
        raise LaunchError(f"--job-dir {visible(job_dir, 80)}: too long (a name of at most {NAME_MAX} bytes, "
                          f"a path well under {PATH_MAX})")
    existing = job_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise LaunchError(f"--job-dir {job_dir}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LaunchError(f"--job-dir {job_dir}: {existing} is not writable")
    return job_dir


def _entry(options: LaunchOptions) -> Entry:
    if options.entry is not None:
        script = Path(options.entry).expanduser()
        if not script.is_file():
            raise LaunchError(f"--entry {options.entry}: no such file")
        return Entry(script=script.resolve())
    try:
        return Entry(module=options.module or DEFAULT_MODULE)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None


def _devices_and_table(options: LaunchOptions, platform: str, mode: str, hosts: tuple[Host, ...]):
    """Device ids per host, and for rank-table mode the rank table (object and exact JSON text)."""
    if platform == "CPU":
        return None, None, choose_devices("CPU", options.devices, options.visible_devices, (), source="")
    if platform == "GPU":
        if options.gpus_available is not None:
            available, source = options.gpus_available, "the allocation's GPU Gres"
        else:
            available, source = visible_gpu_ids(), "nvidia-smi -L"
        devices = choose_devices("GPU", options.devices, options.visible_devices, available, source=source)
        return None, None, devices
    return _ascend(options, mode, hosts)


def _ascend(options: LaunchOptions, mode: str, hosts: tuple[Host, ...]):
    from hccl import hccn_conf, rank_table
    from hccl.errors import HcclError

    try:
        if options.rank_table is not None:
            path = Path(options.rank_table)
            if not path.is_file():
                raise LaunchError(f"--rank-table {path}: no such file")
            table = rank_table.load(path)
            rank_table.validate(table, topology_check=options.topology_check)
            text = path.read_text()
            if mode != "rank-table":
                raise LaunchError("--rank-table: only used with --mode rank-table")
            server = _server_for(table, hosts)
            available = tuple(sorted(int(d.device_id) for d in server.devices))
            devices = choose_devices(
                "Ascend", options.devices, options.visible_devices, available, source=f"rank table {path}"
            )
            return table, text, devices
        conf = Path(options.hccn_conf)
        if not conf.is_file():
            raise LaunchError(f"--hccn-conf {conf}: no such file (needed to list Ascend devices; or give --rank-table)")
        ips = hccn_conf.read(conf)
        devices = choose_devices("Ascend", options.devices, options.visible_devices, tuple(sorted(ips)), source=str(conf))
        if mode != "rank-table":
            return None, None, devices
        if len(hosts) > 1:
            raise LaunchError("--hosts: building a rank table for several hosts needs the SSH support; give --rank-table")
        table = rank_table.build(hosts[0].address, {d: ips[d] for d in devices}, devices=list(devices))
        rank_table.validate(table, topology_check=options.topology_check)
        return table, rank_table.dumps(table), devices
    except HcclError as exc:
        raise LaunchError(str(exc)) from None


def _server_for(table, hosts: tuple[Host, ...]):
    servers = list(table.servers)
    for server in servers:
        if server.server_id in (hosts[0].address, hosts[0].name):
            return server
    if len(servers) == len(hosts):
        return servers[0]
    raise LaunchError(f"--rank-table: no server entry for host {hosts[0].name} ({hosts[0].address})")
