"""The ssh backend: hosts reached over SSH, one agent per host (launcher/remote/), this machine too.

``SshBackend.from_options(options)`` checks the SSH options (--ssh-config, --ssh-key,
--ssh-timeout, --ssh-known-hosts, --ssh-accept-unknown-host-keys, --remote-python,
--master-addr, --heartbeat-timeout; the hosts come from --hosts/--hostfile). Before
anything is written or started,

  ``discover(options, check=...)``  resolves every remote host through the ssh config and
                                    pre-flights all of them in parallel (exit 2 with one table
                                    if anything fails, nothing started); the hosts as plan
                                    hosts (address, user, port, cores, CPU flags), their
                                    hccn.conf text (Ascend) and a scheduler port free on a
                                    remote first host

and, once the plan exists,

  ``groups(plan)``                  remote hosts run their ranks through agents over SSH, this
                                    machine's through the local backend's group
  ``describe(plan)``                per host: how it is reached, what runs there
"""
from __future__ import annotations

import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

from launcher.backends.base import Backend, Discovered, next_attempt_spec
from launcher.errors import LaunchError
from launcher.job.hosts import HOST_PLACEHOLDER, Host, HostEntry, PreparedHosts, host_entries
from launcher.job.options import LaunchOptions

if TYPE_CHECKING:  # fabric/paramiko load only when a job really has remote hosts
    from launcher.job.plan import Plan
    from launcher.remote.preflight import HostReport
    from launcher.remote.ssh import RemoteHost, SshOptions


def preflight_imports(entry: Optional[Path], module: Optional[str]) -> tuple[str, ...]:
    """What every host's interpreter must import: the agent's package, and the ranks' module's package.

    An --entry script is the user's business (it may not even use deeplab): only ``launcher``.
    """
    if entry is not None:
        return ("launcher",)
    from launcher.job.spec import DEFAULT_MODULE

    return ("launcher", (module or DEFAULT_MODULE).split(".")[0])


@dataclass
class SshBackend(Backend):
    entries: tuple[HostEntry, ...]
    ssh: "SshOptions"
    remote_python: str
    heartbeat_timeout_s: float = 30.0
    name = "ssh"

    min_hosts: Optional[int] = None

    def __post_init__(self) -> None:
        from launcher.backends.host_pool import HostPool

        self.remote: "dict[str, RemoteHost]" = {}  # by plan host name
        self.reports: "dict[str, HostReport]" = {}
        # The planned hosts run the job; spares wait to take the place of a lost one (replan).
        self.pool = HostPool([entry for entry in self.entries if not entry.spare],
                             [entry for entry in self.entries if entry.spare], lambda entry: entry.name,
                             self.min_hosts)
        self.entries = tuple(self.pool.planned)
        self._settled: Optional[LaunchOptions] = None
        # Pre-flight sessions kept open to become the agents of the hosts the controller starts
        # itself (launcher.remote.preflight bootstrap): host name -> WaitingAgent, taken by groups().
        self.waiting: dict = {}

    @classmethod
    def from_options(cls, options: LaunchOptions, entries: Optional[Sequence[HostEntry]] = None) -> "SshBackend":
        from launcher.remote.ssh import SshOptions

        if entries is None:
            entries = hosts_of(options)
        try:
            ssh = SshOptions(config_file=options.ssh_config, key_file=options.ssh_key, timeout_s=options.ssh_timeout_s,
                             known_hosts=options.ssh_known_hosts,
                             accept_unknown_host_keys=options.ssh_accept_unknown_host_keys,
                             parallel=options.ssh_parallel, tree_width=options.ssh_tree_width)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        return cls(tuple(entries), ssh, options.python or sys.executable, options.heartbeat_timeout_s,
                   min_hosts=options.min_hosts)

    def discover(self, options: LaunchOptions, *, check: bool = True) -> Discovered:
        """Settle the platform (detected here unless given), then resolve and pre-flight the hosts."""
        from launcher.job.resolve import settle_platform

        settled = dataclasses.replace(settle_platform(options), python=self.remote_python)
        if options.platform is None and not self.entries[0].local:
            print(f"launch-train: warning: --platform not given: {settled.platform} detected on this machine, "
                  "not on the hosts; give --platform if they differ", file=sys.stderr)
        self._settled = settled
        return Discovered(settled, self.prepare(settled, check=check))

    def replan(self, spec, lost: "dict[str, str]", attempt: int):
        """The next attempt's JobSpec without the hosts in ``lost`` (host name -> why), by HostPool's rule
        (launcher/backends/host_pool.py): None when no planned host was lost (restart on the same hosts)."""
        from launcher.job.job_json import utc_now

        if self._settled is None or not self.pool.replace(lost, attempt, utc_now()):
            return None
        self.entries = tuple(self.pool.planned)
        # The new hosts (a spare) are resolved and pre-flighted as at start.
        return next_attempt_spec(self._settled, spec, attempt, lambda options: self.prepare(options, check=True))

    def _take_spares_for(self, failed: "dict[str, tuple[str, str]]") -> bool:
        """Hosts that failed pre-flight (report name -> (check, problem)) replaced by spares, in their
        places; False (nothing changed) when there are not enough spares for all of them."""
        from launcher.job.job_json import utc_now

        by_name = {remote.name: name for name, remote in self.remote.items()}  # report names are RemoteHost names
        lost = {by_name.get(host, host): f"pre-flight {check}: {problem}" for host, (check, problem) in failed.items()}
        if not lost or len(lost) > len(self.pool.spares):
            return False
        self.pool.replace(lost, 0, utc_now())
        for taken in self.pool.taken[-len(lost):]:
            print(f"launch-train: {taken['replaces']} failed {lost[taken['replaces']]}; "
                  f"{taken['host']} takes its place", file=sys.stderr)
        self.entries = tuple(self.pool.planned)
        return True

    def host_changes(self) -> dict:
        return self.pool.changes()

    def prepare(self, options: LaunchOptions, *, check: bool = True) -> PreparedHosts:
        """Resolve the remote hosts (ssh config) and pre-flight them; ``options`` has platform and mode settled.

        Without ``check`` (dry runs) nothing is checked; hosts are still resolved through the
        ssh config, and Ascend hosts are still asked for their hccn.conf (the rank table needs it).
        """
        from launcher.job.resolve import ranks_per_host
        from launcher.remote.preflight import PreflightFailed, PreflightRequest, run_preflight

        platform, mode = options.platform, options.mode
        remote_entries = [entry for entry in self.entries if not entry.local]
        try:
            resolved = self._resolve(remote_entries)
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        self.remote = {host.host_name: host for host in resolved}
        devices = ranks_per_host(options.devices, self.entries)
        hccn = str(options.hccn_conf) if platform == "Ascend" and options.rank_table is None else None
        first_remote = not self.entries[0].local
        wants_port = mode == "dynamic" and first_remote
        job_dir = (options.job_dir or Path("jobs") / "new-job").expanduser().resolve()
        if check or (hccn is not None and mode == "rank-table"):
            request = PreflightRequest(
                job_dir=job_dir, platform=str(platform),
                devices={name: devices or 1 for name in self.remote},
                remote_python=self.remote_python,
                scheduler_port=(options.sched_port or 0) if wants_port else None,
                hccn_conf=hccn,
                mpirun=mode == "mpirun",
                first_host=self.entries[0].name,
                imports=preflight_imports(options.entry, options.module),
            )
            self.close()  # an earlier pre-flight's sessions (a replan) are not this one's
            try:
                reports = run_preflight(resolved, self.ssh, request, hccn_conf_for=self.hccn_conf_path,
                                        keep=self._started_here(mode) if check else (), kept=self.waiting,
                                        connect=self._connect())
            except PreflightFailed as exc:
                failed = {report.host: report.failures[0] for report in exc.reports if report.failures}
                if not self._take_spares_for(failed):
                    raise LaunchError(str(exc)) from None
                return self.prepare(options, check=check)  # the spares in their places, checked in turn
            self.reports = {host.host_name: report for host, report in zip(resolved, reports)}
        hosts = tuple(self._this_machine(entry) if entry.local else self._plan_host(entry) for entry in self.entries)
        texts = {}
        if hccn is not None and mode == "rank-table":
            for name, remote in self.remote.items():
                texts[name] = (f"{name}:{self.hccn_conf_path(remote, hccn)}", self.reports[name].hccn_conf_text or "")
        port = self.reports[self.entries[0].name].scheduler_port if (wants_port and check) else None
        gpu_ids = self._gpu_ids(options, devices, checked=check) if platform == "GPU" else None
        return PreparedHosts(hosts, texts, port, gpu_ids)

    def _resolve(self, entries: Sequence[HostEntry]) -> "list[RemoteHost]":
        """The entries through the ssh config and DNS (launcher.remote.ssh.resolve_hosts)."""
        from launcher.remote.ssh import resolve_hosts

        return resolve_hosts(entries, self.ssh)

    def _connect(self) -> Callable:
        """How a host is connected to (bench/scale.py's simulated hosts: their own)."""
        from launcher.remote.ssh import connection

        return connection

    def _started_here(self, mode: str) -> "set[str]":
        """The hosts whose pre-flight sessions are kept for the controller's own use: the agents it starts
        itself (the tree start's first tier, launcher.remote.tree; the plan lists the hosts in this
        order); in mpirun mode every host (the first one's agent, the files of the others) up to
        the tree's 64 hosts, none above (the controller would hold a connection per host)."""
        from launcher.remote.tree import DIRECT_HOSTS, plan_tree

        remote = [index for index, entry in enumerate(self.entries) if not entry.local]
        if mode == "mpirun":
            return {self.entries[index].name for index in remote} if len(remote) <= DIRECT_HOSTS else set()
        return {self.entries[index].name for index in plan_tree(remote, self.ssh.tree_width).roots}

    def close(self) -> None:
        """Pre-flight sessions no agent took (a launch that failed before starting them, a replan)."""
        waiting, self.waiting = self.waiting, {}
        for session in waiting.values():
            session.close()

    def _gpu_ids(self, options: LaunchOptions, devices: "int | None", *, checked: bool) -> tuple[int, ...]:
        """The GPU ids every host of the job offers: what each remote host's pre-flight counted
        there (nvidia-smi), and this machine's own list when it is one of the hosts -- never this
        machine's alone when it only controls the job (a login node has no GPU)."""
        from launcher.job.platforms import visible_gpu_ids

        if not checked:  # a dry run looks at nothing: the flags stand for what the hosts have
            return tuple(options.visible_devices or range(devices or 1))
        offered = set(range(min(self.reports[name].device_count or 0 for name in self.remote)))
        if any(entry.local for entry in self.entries):
            offered &= set(visible_gpu_ids())
        return tuple(sorted(offered))

    @staticmethod
    def _this_machine(entry: HostEntry) -> Host:
        """This machine among SSH hosts: its primary address (127.0.0.1 would be every host itself)."""
        import dataclasses

        from hccl.addresses import primary_ipv4

        return dataclasses.replace(entry.local_host(), address=primary_ipv4())

    def _plan_host(self, entry: HostEntry) -> Host:
        """A remote entry as a plan host, with what pre-flight learnt there (cores, CPU flags)."""
        remote = self.remote[entry.name]
        report = self.reports.get(entry.name)
        return Host(name=entry.name, address=remote.address, user=remote.user, port=remote.port, local=False,
                    cpus=tuple(report.cpus) if report else (),
                    cpu_flags=frozenset(report.cpu_flags) if report else frozenset(), slots=entry.slots)

    @staticmethod
    def hccn_conf_path(host: "RemoteHost", path: str) -> str:
        return path.replace(HOST_PLACEHOLDER, host.host_name)

    def groups(self, plan: "Plan"):
        from launcher.remote.group import multi_host_groups
        from launcher.remote.ssh import fabric_config

        # The ssh config parsed once for every host's connection (21 ms per host for a config that
        # lists 1,024 hosts); the connections are made in one thread, so sharing it is safe.
        return multi_host_groups(self.remote, self.ssh, self.remote_python, config=fabric_config(self.ssh),
                                 connect=self._connect(), waiting=self.waiting,
                                 heartbeat_timeout_s=self.heartbeat_timeout_s)(plan)

    def describe(self, plan: "Plan") -> str:
        """Per host: how it is reached and what runs there."""
        from launcher.remote.host_slice import host_job_file
        from launcher.remote.relay import relay_job_file
        from launcher.remote.session import agent_argv, agent_command

        from launcher.remote.group import spawn_tree_of

        tree = spawn_tree_of(plan, self.ssh)
        lines = ["", tree.describe() if any(not entry.host.local for entry in plan.hosts) else "", "per host:"]
        for index, entry in enumerate(plan.hosts):
            host = entry.host
            ranks = plan.ranks_on(host.name)
            what = [f"ranks {', '.join(str(r.rank) for r in ranks)}"]
            if plan.scheduler is not None and plan.scheduler.host == host.name:
                what.insert(0, f"scheduler on {plan.scheduler.address}:{plan.scheduler.port}")
            lines.append(f"  {host.name}: {'; '.join(what)}")
            if host.local:
                lines.append("    local: started by this launcher")
                continue
            remote = self.remote[host.name]
            target = f"{remote.user}@{remote.hostname}"
            if index in tree.parent:
                relay = plan.hosts[tree.parent[index]].host.name
                lines.append(f"    started by the agent on {relay} (a relay; its files pass through it)")
                continue
            forward = sorted({r.rank for r in ranks} & set(plan.spec.tee))
            below = tree.subtree(index)
            command = agent_command(self.remote_python, agent_argv(
                str(plan.spec.job_dir), host.name, self.heartbeat_timeout_s, forward_ranks=forward,
                job_file=host_job_file(index), relay_file=relay_job_file(index) if below else None))
            lines.append(f"    ssh -p {remote.port} {shlex.quote(target)} {shlex.quote(command)}")
            lines.append(f"    (its files first, down the same channel: {host_job_file(index)} (its slice of job.json),"
                         f" LOG<rank>/env.sh + run.sh of its ranks"
                         f"{', rank_table.json' if plan.spec.mode == 'rank-table' else ''}; the pre-flight's"
                         " session becomes this agent)")
            if below:
                lines.append(f"    relay for {len(below)} hosts: it starts "
                             f"{', '.join(plan.hosts[child].host.name for child in tree.children[index])}"
                             f" (spec {relay_job_file(index)}, their files under relay/{index}/host-<index>/)")
        return "\n".join(lines) + "\n"


def hosts_of(options: LaunchOptions) -> tuple[HostEntry, ...]:
    """The job's hosts as the user wrote them (--hosts / --hostfile; this machine when neither)."""
    try:
        return host_entries(options.hosts, options.hostfile, options.spare_hosts)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
