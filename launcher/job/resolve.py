"""From what the user asked (LaunchOptions) and the hosts it runs on to a fully resolved JobSpec.

One resolver for one host or many. This is where the launcher looks at the machine:
detects the platform, lists devices, reads hccn.conf or the rank table, picks or checks
the scheduler port, checks the entry script. Remote hosts arrive already resolved
(address through the ssh config, cores and CPU flags, their hccn.conf text and a free
scheduler port from pre-flight: launcher/backends/); this machine is probed here.
Every problem is a LaunchError naming the flag or file; nothing is written.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from launcher.errors import LaunchError
from launcher.job.hang_policy import HangPolicy
from launcher.job.hosts import HOST_PLACEHOLDER, Host, HostEntry, host_entries
from launcher.job.job_json import utc_now
from launcher.job.options import LaunchOptions, new_job_id, parse_tee
from launcher.job.platforms import (
    MODES,
    check_platform,
    choose_devices,
    default_mode,
    detect_platform,
    usable_cpus,
    visible_gpu_ids,
)
from launcher.job.ports import check_port_free, free_port
from launcher.job.safe_text import visible
from launcher.job.render import check_templates_dir
from launcher.job.spec import DEFAULT_MODULE, Entry, JobSpec

Warn = Callable[[str], None]
# Linux: a path component of at most NAME_MAX bytes, a whole path of fewer than PATH_MAX.
NAME_MAX = 255
PATH_MAX = 4096
# hccn.conf text of a remote host, by host name: (where it was read, for messages; its text).
HccnTexts = Mapping[str, tuple[str, str]]


def _warn(message: str) -> None:
    print(f"launch-train: warning: {message}", file=sys.stderr)


def settle_platform(options: LaunchOptions) -> LaunchOptions:
    """The options with platform and start mode decided (detected on this machine when not given)."""
    platform = check_platform(options.platform) if options.platform else detect_platform(options.hccn_conf)
    mode = options.mode or default_mode(platform)
    if mode not in MODES:
        raise LaunchError(f"--mode {mode!r}: unknown start mode (use rank-table, mpirun or dynamic)")
    if mode == "rank-table" and platform != "Ascend":
        raise LaunchError(f"--mode rank-table: rank tables are for Ascend (platform is {platform}); use dynamic")
    return dataclasses.replace(options, platform=platform, mode=mode)


def ranks_per_host(devices: Optional[int], hosts: Sequence["Host | HostEntry"]) -> Optional[int]:
    """--devices, or the hostfile's slots (which must agree with it and between hosts)."""
    slots = {host.slots for host in hosts if host.slots is not None}
    if len(slots) > 1:
        raise LaunchError(f"--hostfile: slots differ between hosts ({', '.join(map(str, sorted(slots)))}); "
                          "every host runs the same number of ranks")
    if not slots:
        return devices
    (count,) = slots
    if devices is not None and devices != count:
        raise LaunchError(f"--devices {devices} disagrees with slots={count} in --hostfile")
    return count


def local_hosts(options: LaunchOptions) -> tuple[Host, ...]:
    """The hosts of ``--hosts``/``--hostfile`` when every one is this machine (the library call's default)."""
    try:
        entries = tuple(entry for entry in host_entries(options.hosts, options.hostfile) if not entry.spare)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    remote = [entry.label for entry in entries if not entry.local]
    if remote:
        raise LaunchError(f"--hosts {','.join(remote)}: not this machine; remote hosts are resolved and "
                          "pre-flighted first (launcher.backends.ssh.SshBackend.discover), then passed as hosts=")
    return tuple(entry.local_host() for entry in entries)


def resolve_spec(
    options: LaunchOptions,
    *,
    hosts: Optional[Sequence[Host]] = None,
    hccn_texts: Optional[HccnTexts] = None,
    scheduler_port: Optional[int] = None,
    gpu_ids: Optional[Sequence[int]] = None,
    warn: Warn = _warn,
) -> JobSpec:
    """Every choice made. ``hosts``: the job's hosts in rank order (default: options.hosts, all local);
    ``hccn_texts``: remote hosts' hccn.conf; ``scheduler_port``: free on a remote first host (pre-flight);
    ``gpu_ids``: the GPUs every host offers as their allocation says (default: nvidia-smi here)."""
    options = settle_platform(options)
    platform, mode = options.platform, options.mode
    assert platform is not None and mode is not None
    if mode == "mpirun" and platform == "CPU":
        warn("--mode mpirun on CPU: MindSpore's CPU build cannot init() communication under mpirun")

    hosts = tuple(hosts) if hosts is not None else local_hosts(options)
    if not hosts:
        raise LaunchError("--hosts: at least one host is needed")
    hosts = _with_addresses(hosts, options.master_addr)
    hosts = tuple(_probe(h) if h.local else h for h in hosts)
    count = ranks_per_host(options.devices, hosts)
    table, table_json, devices = _devices_and_table(options, count, hosts, hccn_texts or {}, gpu_ids)
    if platform == "CPU":
        cores = len(hosts[0].cpus) if hosts[0].local else 0
        if cores and len(devices) > cores:
            warn(f"--devices {len(devices)}: more CPU ranks than the {cores} usable cores; ranks will share cores")

    sched_port = _scheduler_port(options, hosts[0], scheduler_port) if mode == "dynamic" else None

    for arg in options.args:
        if not arg.startswith("-") and not Path(arg).is_absolute() and os.sep in arg and Path(arg).exists():
            warn(f"training arg {arg!r} is a relative path; ranks run in <job-dir>/LOG<rank>/, "
                 f"so pass {str(Path(arg).resolve())!r}")
    entry = _entry(options)
    job_id = options.job_id or new_job_id()
    job_dir = check_job_dir((options.job_dir if options.job_dir is not None else Path("jobs") / job_id).expanduser())
    if not options.resume:
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
            save_grace_s=options.grace_s,
            first_attempt=options.first_attempt,
            argv=tuple(dataclasses.replace(options, job_dir=job_dir, job_id=job_id).to_argv()),
        )
    except ValueError as exc:
        raise LaunchError(str(exc)) from None


def check_job_dir_free(job_dir: Path, prepared: Sequence[str] = ()) -> None:
    """The job dir must be new or empty, but for the files ``prepared`` names (what --submit wrote)."""
    from fnmatch import fnmatch

    if not job_dir.exists():
        return
    if not job_dir.is_dir() or any(not any(fnmatch(p.name, pattern) for pattern in prepared) for p in job_dir.iterdir()):
        raise LaunchError(f"--job-dir {job_dir}: already exists and is not empty (choose a new directory)")


def check_job_dir(path: Path) -> Path:
    """The absolute job dir, if it can be made: not too long, no file in the way, writable.

    (New or empty -- but for what --submit prepared -- is check_job_dir_free's check, above.)

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


def _with_addresses(hosts: tuple[Host, ...], master_addr: Optional[str]) -> tuple[Host, ...]:
    """``--master-addr`` names the first host's (the scheduler's) address outright; the others stay.

    (Whoever made the hosts chose their addresses: this machine's 127.0.0.1 for a job of its own,
    its primary address once SSH hosts must reach it (launcher.backends.ssh), the pods' addresses
    from the operator's environment.)
    """
    if master_addr is None or master_addr == hosts[0].address:
        return hosts
    try:
        return (dataclasses.replace(hosts[0], address=master_addr), *hosts[1:])
    except ValueError as exc:
        raise LaunchError(f"--master-addr {master_addr}: {exc}") from None


def _probe(host: Host) -> Host:
    from cpu_env import read_cpu_flags

    return dataclasses.replace(host, cpus=usable_cpus(), cpu_flags=read_cpu_flags())


def _scheduler_port(options: LaunchOptions, first: Host, remote_pick: Optional[int]) -> int:
    if first.local:
        if options.sched_port is not None:
            return check_port_free(options.sched_port, first.address)
        return free_port(first.address)
    if options.sched_port is not None:
        return options.sched_port  # pre-flight checked it is free there
    if remote_pick is None:
        return free_port("0.0.0.0")  # a dry run, without pre-flight: a port free here stands in
    return remote_pick


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


def _devices_and_table(options: LaunchOptions, count: Optional[int], hosts: tuple[Host, ...], hccn_texts: HccnTexts,
                       gpu_ids: Optional[Sequence[int]]):
    """Device ids per host, and for rank-table mode the rank table (object and exact JSON text)."""
    if options.platform == "CPU":
        return None, None, choose_devices("CPU", count, options.visible_devices, (), source="")
    if options.platform == "GPU":
        if gpu_ids is not None:
            available, source = tuple(gpu_ids), "the hosts (Slurm Gres or their nvidia-smi)"
        else:
            available, source = visible_gpu_ids(), "nvidia-smi -L"
        devices = choose_devices("GPU", count, options.visible_devices, available, source=source)
        return None, None, devices
    from hccl.errors import HcclError

    try:
        if options.rank_table is not None:
            return _given_rank_table(options, count, hosts)
        return _rank_table_from_hccn_conf(options, count, hosts, hccn_texts)
    except HcclError as exc:
        raise LaunchError(str(exc)) from None


def _given_rank_table(options: LaunchOptions, count: Optional[int], hosts: tuple[Host, ...]):
    from hccl import rank_table

    path = Path(options.rank_table)  # type: ignore[arg-type]
    if not path.is_file():
        raise LaunchError(f"--rank-table {path}: no such file")
    table = rank_table.load(path)
    rank_table.validate(table, topology_check=options.topology_check)
    if options.mode != "rank-table":
        raise LaunchError("--rank-table: only used with --mode rank-table")
    server = _server_for(table, hosts)
    available = tuple(sorted(int(d.device_id) for d in server.devices))
    devices = choose_devices("Ascend", count, options.visible_devices, available, source=f"rank table {path}")
    return table, path.read_text(), devices


def _rank_table_from_hccn_conf(options: LaunchOptions, count: Optional[int], hosts: tuple[Host, ...],
                               hccn_texts: HccnTexts):
    """Each host's device addresses from its hccn.conf; one rank table for all of them (rank-table mode)."""
    from hccl import hccn_conf, rank_table

    if options.mode != "rank-table":
        # Only the device list is needed: one host's hccn.conf tells it (this machine's, or one that was
        # read; a pod knows only its own).
        host = next((h for h in hosts if h.local or h.name in hccn_texts), hosts[0])
        source, ips = _host_hccn_conf(options, host, hccn_texts, hccn_conf)
        return None, None, choose_devices("Ascend", count, options.visible_devices, tuple(sorted(ips)), source=source)
    addresses = [_host_hccn_conf(options, host, hccn_texts, hccn_conf) for host in hosts]
    first_source, first_ips = addresses[0]
    devices = choose_devices("Ascend", count, options.visible_devices, tuple(sorted(first_ips)), source=first_source)
    tables = []
    for host, (source, ips) in zip(hosts, addresses):
        missing = [d for d in devices if d not in ips]
        if missing:
            raise LaunchError(f"--hccn-conf {source}: no address for device(s) {','.join(map(str, missing))} of {host.name}")
        tables.append(rank_table.build(host.address, {d: ips[d] for d in devices}, devices=list(devices)))
    table = tables[0] if len(tables) == 1 else rank_table.merge(tables)
    rank_table.validate(table, topology_check=options.topology_check)
    return table, rank_table.dumps(table), devices


def _host_hccn_conf(options: LaunchOptions, host: Host, hccn_texts: HccnTexts, hccn_conf) -> tuple[str, dict]:
    """(where it was read, device id -> address) of one host; ``{host}`` in --hccn-conf is the host's name."""
    if not host.local:
        if host.name not in hccn_texts:
            raise LaunchError(f"--hccn-conf: the hccn.conf of {host.name} was not read by pre-flight")
        source, text = hccn_texts[host.name]
        return source, hccn_conf.parse(text, source=source)
    path = Path(str(options.hccn_conf).replace(HOST_PLACEHOLDER, host.name))
    if not path.is_file():
        raise LaunchError(f"--hccn-conf {path}: no such file (needed to list Ascend devices; or give --rank-table)")
    return str(path), hccn_conf.read(path)


def _server_for(table, hosts: tuple[Host, ...]):
    servers = list(table.servers)
    for server in servers:
        if server.server_id in (hosts[0].address, hosts[0].name):
            return server
    if len(servers) == len(hosts):
        return servers[0]
    raise LaunchError(f"--rank-table: no server entry for host {hosts[0].name} ({hosts[0].address})")
