"""launch-train over several hosts: the SSH flags, pre-flight, and what they change in the job.

launcher.cli adds these flags with ``add_arguments(parser)`` (--hostfile, --ssh-config,
--ssh-key, --ssh-timeout, --ssh-known-hosts, --ssh-accept-unknown-host-keys,
--remote-python, --master-addr, --heartbeat-timeout), then, when a host is remote
(``MultiHostLaunch.from_args`` returns None when every host is this machine), calls in
this order, all before anything is written or started:

  ``before_resolve(options)``  resolves the hosts through the ssh config, pre-flights all of
                               them in parallel (exit 2 with one table if anything fails,
                               nothing started) and completes the options with what it found:
                               --hosts from --hostfile, --devices from hostfile slots,
                               --sched-port picked free on the first host, --rank-table merged
                               from every host's hccn.conf (Ascend)
  ``parse_remote_host``        the launcher's parser for remote ``--hosts`` names
  ``after_resolve(spec)``      the scheduler address the other hosts can reach (--master-addr),
                               the ranks' interpreter (--remote-python)
  ``rank_groups(plan)``        remote hosts run their ranks through agents over SSH
  ``dry_run_text(plan)``       per host: how it is reached, what runs there

``--hccn-conf`` may contain ``{host}``, replaced by each host's name: hosts whose
hccn.conf is elsewhere (or test hosts that share one machine) each read their own.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from launcher.errors import LaunchError
from launcher.job.host_list import Host, local_names
from launcher.job.hosts import HostSpec, parse_host, parse_hosts_arg, read_hostfile
from launcher.job.safe_text import refuse_control

if TYPE_CHECKING:  # fabric/paramiko load only when a job really has remote hosts
    from launcher.remote.preflight import HostReport
    from launcher.remote.ssh import RemoteHost, SshOptions

HOST_PLACEHOLDER = "{host}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The multi-host flags (documented in launcher.cli's docstring and the README)."""
    group = parser.add_argument_group("several hosts (SSH)")
    group.add_argument("--hostfile", type=Path, metavar="FILE",
                       help="hosts, one per line: [user@]host[:port] [slots=N]; # comments")
    group.add_argument("--ssh-config", type=Path, metavar="FILE", help="OpenSSH client config (default ~/.ssh/config)")
    group.add_argument("--ssh-key", type=Path, metavar="FILE", help="private key for every host")
    group.add_argument("--ssh-timeout", type=float, default=10.0, metavar="S", help="connect timeout (default 10)")
    group.add_argument("--ssh-known-hosts", type=Path, metavar="FILE",
                       help="known_hosts to check host keys against (default: ssh config, ~/.ssh/known_hosts)")
    group.add_argument("--ssh-accept-unknown-host-keys", action="store_true",
                       help="accept host keys that are not in known_hosts (not recommended)")
    group.add_argument("--remote-python", metavar="PATH", default=sys.executable,
                       help="interpreter on the remote hosts (default: this one's path)")
    group.add_argument("--master-addr", metavar="ADDR",
                       help="address of the first host that the others reach (dynamic-mode scheduler)")
    group.add_argument("--heartbeat-timeout", type=float, default=30.0, metavar="S",
                       help="agents stop their ranks when the controller is silent this long (default 30)")


def preflight_imports(entry: Optional[Path], module: Optional[str]) -> tuple[str, ...]:
    """What every host's interpreter must import: the agent's package, and the ranks' module's package.

    An --entry script is the user's business (it may not even use deeplab): only ``launcher``.
    """
    if entry is not None:
        return ("launcher",)
    from launcher.job.spec import DEFAULT_MODULE

    return ("launcher", (module or DEFAULT_MODULE).split(".")[0])


def _is_remote(spec: HostSpec, mine: frozenset) -> bool:
    return not (spec.user is None and spec.port is None and spec.host in mine)


@dataclass
class MultiHostLaunch:
    specs: tuple[HostSpec, ...]
    ssh: "SshOptions"
    remote_python: str
    master_addr: Optional[str] = None
    heartbeat_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.remote: "dict[str, RemoteHost]" = {}
        self.temp_rank_table: Optional[Path] = None
        self.reports: "dict[str, HostReport]" = {}

    # -- flags --------------------------------------------------------------------------
    @classmethod
    def from_args(cls, ns: argparse.Namespace) -> Optional["MultiHostLaunch"]:
        """None when no host is remote (the launcher then runs everything locally)."""
        if ns.hosts and ns.hostfile:
            raise LaunchError("--hosts and --hostfile: give one of them")
        try:
            if ns.master_addr is not None:
                # The scheduler's address reaches env.sh comments, hostfiles and other hosts' commands.
                refuse_control(ns.master_addr, "--master-addr")
                if not re.fullmatch(r"[A-Za-z0-9_.:%-]+", ns.master_addr):
                    raise ValueError(f"--master-addr {ns.master_addr[:80]!r}: not a host name or IP address")
            if ns.hostfile:
                specs = read_hostfile(ns.hostfile)
            elif ns.hosts:
                specs = parse_hosts_arg(ns.hosts)
            else:
                return None
            mine = local_names()
            if not any(_is_remote(spec, mine) for spec in specs):
                return None
            from launcher.remote.ssh import SshOptions

            ssh = SshOptions(config_file=ns.ssh_config, key_file=ns.ssh_key, timeout_s=ns.ssh_timeout,
                             known_hosts=ns.ssh_known_hosts, accept_unknown_host_keys=ns.ssh_accept_unknown_host_keys)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        if not 0 < ns.heartbeat_timeout <= 86400:  # NaN and inf fail this too
            raise LaunchError(f"--heartbeat-timeout {ns.heartbeat_timeout}: must be a number of seconds in (0, 86400]")
        return cls(specs, ssh, ns.remote_python, ns.master_addr, ns.heartbeat_timeout)

    @property
    def hosts_text(self) -> str:
        """The hosts as one ``--hosts`` value for the launcher's own host parsing."""
        return ",".join(spec.name for spec in self.specs)

    # -- before the launcher resolves the job ------------------------------------------
    def before_resolve(self, options, preflight: bool = True):
        """Pre-flight every remote host; returns LaunchOptions completed with what it found.

        Without ``preflight`` (dry runs) nothing is checked; hosts are still resolved through
        the ssh config, and Ascend hosts are still asked for their hccn.conf (the rank table
        needs it).
        """
        from launcher.job.platforms import DEFAULT_MODE, check_platform, detect_platform
        from launcher.remote.preflight import PreflightFailed, PreflightRequest, run_preflight
        from launcher.remote.ssh import resolve_hosts

        platform = check_platform(options.platform) if options.platform else detect_platform(options.hccn_conf)
        mode = options.mode or DEFAULT_MODE[platform]
        mine = local_names()
        if not options.platform and _is_remote(self.specs[0], mine):
            print(f"launch-train: warning: --platform not given: {platform} detected on this machine, "
                  "not on the hosts; give --platform if they differ", file=sys.stderr)
        remote_specs = [spec for spec in self.specs if _is_remote(spec, mine)]
        try:
            resolved = resolve_hosts(remote_specs, self.ssh)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        self.remote = {host.host_name: host for host in resolved}
        slots = {spec.slots for spec in self.specs if spec.slots is not None}
        if len(slots) > 1:
            raise LaunchError(f"--hostfile: slots differ between hosts ({', '.join(map(str, sorted(slots)))}); "
                              "every host runs the same number of ranks")
        devices = options.devices
        if slots:
            (count,) = slots
            if devices is not None and devices != count:
                raise LaunchError(f"--devices {devices} disagrees with slots={count} in --hostfile")
            devices = count
        hccn = str(options.hccn_conf) if platform == "Ascend" and options.rank_table is None else None
        wants_port = mode == "dynamic" and _is_remote(self.specs[0], mine)
        job_dir = (options.job_dir or Path("jobs") / "new-job").expanduser().resolve()
        if preflight or (hccn is not None and mode == "rank-table"):
            requests = PreflightRequest(
                job_dir=job_dir, platform=platform,
                devices={name: devices or 1 for name in self.remote},
                remote_python=self.remote_python,
                scheduler_port=(options.sched_port or 0) if wants_port else None,
                hccn_conf=hccn,
                mpirun=mode == "mpirun",
                first_host=_host_name(self.specs[0]),
                imports=preflight_imports(options.entry, options.module),
            )
            try:
                reports = run_preflight(resolved, self.ssh, requests, hccn_conf_for=self.hccn_conf_path)
            except PreflightFailed as exc:
                raise LaunchError(str(exc)) from None
            self.reports = {host.host_name: report for host, report in zip(resolved, reports)}
        changes: dict = {"hosts": self.hosts_text, "devices": devices}
        if wants_port and preflight:
            changes["sched_port"] = self.reports[resolved[0].host_name].scheduler_port
        if hccn is not None and mode == "rank-table":
            changes["rank_table"] = self._merged_rank_table(options, devices)
        return dataclasses.replace(options, **changes)

    def hccn_conf_path(self, host: "RemoteHost", path: str) -> str:
        return path.replace(HOST_PLACEHOLDER, host.host_name)

    def _merged_rank_table(self, options, devices: Optional[int]) -> Path:
        """One rank table from every host's hccn.conf (servers sorted by server_id), as a temp file."""
        from hccl import hccn_conf, rank_table
        from hccl.errors import HcclError

        mine = local_names()
        tables = []
        try:
            for spec in self.specs:
                if _is_remote(spec, mine):
                    remote = self.remote[_host_name(spec)]
                    report = self.reports[remote.host_name]
                    source = f"{remote.host_name}:{self.hccn_conf_path(remote, str(options.hccn_conf))}"
                    ips = hccn_conf.parse(report.hccn_conf_text or "", source=source)
                    server_id = remote.address
                else:
                    local = str(options.hccn_conf).replace(HOST_PLACEHOLDER, spec.host)
                    ips = hccn_conf.read(local)
                    from hccl.addresses import primary_ipv4

                    server_id = self.master_addr or primary_ipv4()
                chosen = list(options.visible_devices or sorted(ips)[: devices or len(ips)])
                missing = [d for d in chosen if d not in ips]
                if missing:
                    raise LaunchError(f"--hccn-conf on {spec.name}: no address for device(s) {missing}")
                tables.append(rank_table.build(server_id, {d: ips[d] for d in chosen}, devices=chosen))
            table = rank_table.merge(tables)
            rank_table.validate(table, topology_check=getattr(options, "topology_check", True))
        except HcclError as exc:
            raise LaunchError(str(exc)) from None
        # The launcher reads --rank-table once while resolving the job; after_resolve removes this file.
        handle, name = tempfile.mkstemp(prefix="rank_table-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            out.write(rank_table.dumps(table))
        self.temp_rank_table = Path(name)
        return self.temp_rank_table

    # -- hooks the launcher calls -------------------------------------------------------
    def parse_remote_host(self, entry: str) -> Host:
        """``--hosts`` entry -> Host, with what pre-flight learnt there (cores, CPU flags)."""
        name = _host_name(parse_host(entry))
        remote = self.remote.get(name)
        if remote is None:
            raise ValueError(f"{entry!r} was not pre-flighted")
        report = self.reports.get(name)
        return Host(name=name, address=remote.address, user=remote.user, port=remote.port, local=False,
                    cpus=tuple(report.cpus) if report else (), cpu_flags=frozenset(report.cpu_flags) if report else frozenset())

    def after_resolve(self, spec):
        """The ranks' interpreter; the scheduler must listen where the other hosts can reach it."""
        if self.temp_rank_table is not None:
            self.temp_rank_table.unlink(missing_ok=True)  # its text is in the spec now
            self.temp_rank_table = None
        if spec.python != self.remote_python:
            spec = dataclasses.replace(spec, python=self.remote_python)
        first = spec.hosts[0]
        address = self.master_addr
        if address is None and first.local:
            from hccl.addresses import primary_ipv4

            address = primary_ipv4()  # 127.0.0.1 would be this machine for every host
        if address is None or address == first.address:
            return spec
        try:
            return dataclasses.replace(spec, hosts=(dataclasses.replace(first, address=address), *spec.hosts[1:]))
        except ValueError as exc:
            raise LaunchError(f"--master-addr {address}: {exc}") from None

    def rank_groups(self, plan):
        from launcher.remote.group import multi_host_groups

        return multi_host_groups(self.remote, self.ssh, self.remote_python,
                                 heartbeat_timeout_s=self.heartbeat_timeout_s)(plan)

    def dry_run_text(self, plan) -> str:
        """Per host: how it is reached and what runs there."""
        lines = ["", "per host:"]
        for entry in plan.hosts:
            host = entry.host
            ranks = plan.ranks_on(host.name)
            what = [f"ranks {', '.join(str(r.rank) for r in ranks)}"]
            if plan.scheduler is not None and plan.scheduler.host == host.name:
                what.insert(0, f"scheduler on {plan.scheduler.address}:{plan.scheduler.port}")
            lines.append(f"  {host.name}: {'; '.join(what)}")
            if host.local:
                lines.append("    local: started by this launcher")
                continue
            from launcher.remote.group import agent_command

            remote = self.remote[host.name]
            target = f"{remote.user}@{remote.hostname}"
            forward = sorted({r.rank for r in ranks} & set(plan.spec.tee))
            command = agent_command(self.remote_python, str(plan.spec.job_dir), host.name, self.heartbeat_timeout_s,
                                    forward_ranks=forward)
            lines.append(f"    ssh -p {remote.port} {shlex.quote(target)} {shlex.quote(command)}")
            lines.append(f"    (files pushed first: job.json, LOG<rank>/env.sh + run.sh of its ranks"
                         f"{', rank_table.json' if plan.spec.mode == 'rank-table' else ''})")
        return "\n".join(lines) + "\n"


def _host_name(spec: HostSpec) -> str:
    return spec.host if spec.port is None else f"{spec.host}:{spec.port}"
