"""launch-train inside a Slurm allocation (``--launcher slurm``): hosts from the allocation, one srun step.

The CLI asks ``chosen_launcher(flag, environ)`` which launcher runs the job (slurm by
default when SLURM_JOB_ID is set and srun exists), then, for slurm, calls in this order,
all before anything is written or started, then hands the one resolver
(launcher.job.resolve.resolve_spec) the hosts and their hccn.conf, as the SSH support does:

  ``before_resolve(options)``  the allocation's nodes (scontrol), one probe task per node
                               (job dir visible everywhere, CPU flags, a free scheduler port
                               on the first node, hccn.conf in rank-table mode), and the
                               options completed with them: --devices from
                               SLURM_NTASKS_PER_NODE or the nodes' Gres
  ``hosts``                    the nodes as the plan's hosts (name = node name, address =
                               NodeAddr: what the other nodes reach it by)
  ``hccn_texts(options)``      every node's hccn.conf text (rank-table mode): the resolver
                               builds one rank table for all nodes from them
  ``rank_groups(plan)``        ONE SlurmStepGroup (launcher/run/slurm.py; mpirun mode: one mpirun, which Open MPI
                               starts through the allocation itself)
  ``dry_run_text(plan)``       the srun command lines
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Mapping, Optional

from launcher.cluster.slurm_allocation import SlurmAllocation
from launcher.cluster.slurm_probe import NodeProbe, ProbeError, ProbeRun
from launcher.cluster.slurm_query import SlurmQueryError, current_allocation
from launcher.errors import LaunchError
from launcher.job.hosts import Host

LAUNCHERS = ("slurm", "ssh", "local")


def chosen_launcher(flag: Optional[str], environ: Optional[Mapping[str, str]] = None,
                    hosts_given: bool = False) -> str:
    """--launcher as given; else slurm inside an allocation with srun on PATH (unless --hosts/--hostfile
    name the hosts), else ssh/local by --hosts."""
    environ = os.environ if environ is None else environ
    if flag is not None:
        if flag not in LAUNCHERS:
            raise LaunchError(f"--launcher {flag!r}: use one of {', '.join(LAUNCHERS)}")
        return flag
    if hosts_given:
        return "ssh"
    if (environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID")) and shutil.which("srun", path=environ.get("PATH")):
        return "slurm"
    return "ssh"  # the SSH support decides: every host this machine -> a local launch


class SlurmLaunch:
    def __init__(self, allocation: SlurmAllocation, environ: Optional[Mapping[str, str]] = None,
                 python: str = sys.executable) -> None:
        self.allocation = allocation
        self.environ = dict(os.environ if environ is None else environ)
        self.python = python
        self.probes: dict[str, NodeProbe] = {}
        self._probe: Optional[ProbeRun] = None
        self._probe_key: Optional[tuple] = None

    @classmethod
    def from_environment(cls, environ: Optional[Mapping[str, str]] = None) -> "SlurmLaunch":
        try:
            return cls(current_allocation(environ), environ)
        except SlurmQueryError as exc:
            raise LaunchError(str(exc)) from None

    # -- the per-node probe ------------------------------------------------------------
    def _wants(self, options, preflight: bool):
        """(platform, mode, whether the probe must read hccn.conf, job dir, whether to probe at all)."""
        from launcher.job.platforms import DEFAULT_MODE, check_platform

        platform = check_platform(options.platform) if options.platform else self._platform_from_gres()
        mode = options.mode or DEFAULT_MODE[platform]
        rank_table_mode = mode == "rank-table" and options.rank_table is None
        job_dir = (options.job_dir or Path("jobs") / "new-job").expanduser().resolve()
        return platform, mode, rank_table_mode, job_dir, preflight or rank_table_mode

    def start_probe(self, options, preflight: bool = True) -> None:
        """Start the per-node probe step now; before_resolve reads it (the launcher imports meanwhile)."""
        if options.hosts:
            return  # before_resolve refuses them
        _platform, _mode, rank_table_mode, job_dir, probe = self._wants(options, preflight)
        if not probe:
            return
        # The marker goes into the job dir's parent: the job dir itself must stay unwritten until the
        # launch has checked everything.
        parent = job_dir.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._probe = ProbeRun(self.python, self.allocation.node_names, parent,
                                   str(options.hccn_conf) if rank_table_mode else None, self.environ)
        except ProbeError as exc:
            raise LaunchError(str(exc)) from None
        except OSError as exc:
            raise LaunchError(f"--job-dir {job_dir}: cannot create {parent} ({exc.strerror or exc})") from None
        self._probe_key = (job_dir, rank_table_mode, str(options.hccn_conf))

    def abandon_probe(self) -> None:
        if self._probe is not None:
            self._probe.abandon()
            self._probe = None

    # -- before the launcher resolves the job ------------------------------------------
    def before_resolve(self, options, preflight: bool = True):
        """Probe every node; LaunchOptions completed with the allocation's platform, devices, port.

        The hosts (``hosts``) and their hccn.conf (``hccn_texts``) go to the resolver as they are:
        it builds the rank table for all nodes, as it does for hosts over SSH."""
        if options.hosts:
            raise LaunchError("--hosts: under --launcher slurm the hosts are the allocation's nodes "
                              "(use --launcher ssh to list hosts yourself)")
        platform, mode, rank_table_mode, job_dir, probe = self._wants(options, preflight)
        if probe:
            if self._probe is None or self._probe_key != (job_dir, rank_table_mode, str(options.hccn_conf)):
                self.abandon_probe()  # started for other options (or not at all): look again
                self.start_probe(options, preflight)
            try:
                self.probes = self._probe.result()
            except ProbeError as exc:
                raise LaunchError(str(exc).replace(f"--job-dir {job_dir.parent}", f"--job-dir {job_dir}")) from None
            finally:
                self._probe = None
        # Slurm places and binds the tasks (its task plugin, --cpu-bind): a taskset inside a task could
        # name CPUs outside the task's cgroup. Thread counts still follow the CPUs allocated per node.
        changes: dict = {"platform": platform, "mode": mode, "devices": self._devices(options, platform),
                         "bind_cores": False}
        if platform == "GPU":
            # The launcher may run on a login node without GPUs: the nodes' GPUs are what Slurm allocated.
            count = self.allocation.devices_per_node("GPU") or changes["devices"] or 1
            changes["gpus_available"] = tuple(range(count))
        if mode == "dynamic" and options.sched_port is None and self.probes:
            changes["sched_port"] = self.probes[self.allocation.first.name].free_port
        return dataclasses.replace(options, **changes)

    def _platform_from_gres(self) -> str:
        for platform in ("Ascend", "GPU"):
            if self.allocation.devices_per_node(platform):
                return platform
        return "CPU"

    def _devices(self, options, platform: str) -> Optional[int]:
        if options.devices is not None or options.visible_devices is not None:
            return options.devices
        per_node = self.environ.get("SLURM_NTASKS_PER_NODE", "")
        if per_node.isdigit():
            return int(per_node)
        return self.allocation.devices_per_node(platform) if platform != "CPU" else None

    def hccn_texts(self, options) -> dict:
        """Every node's hccn.conf as the probe read it, for the resolver's rank table (rank-table mode)."""
        if options.mode != "rank-table" or options.rank_table is not None:
            return {}
        texts = {}
        for node in self.allocation.nodes:
            probe = self.probes[node.name]
            where = f"{node.name}:{probe.hccn_path}"
            if probe.hccn_error is not None:
                raise LaunchError(f"--hccn-conf {where}: {probe.hccn_error} (needed for the rank table)")
            texts[node.name] = (where, probe.hccn_text or "")
        return texts

    # -- hooks the launcher calls -------------------------------------------------------
    @property
    def hosts(self) -> tuple[Host, ...]:
        """The nodes in allocation order, reached by their NodeAddr (never "local": ranks start through srun)."""
        out = []
        cpus = self.allocation.cpus_per_node or (0,) * len(self.allocation.nodes)
        for node, allocated in zip(self.allocation.nodes, cpus):
            probe = self.probes.get(node.name)
            try:
                # cpus: as many as Slurm allocated there (ids only count them: binding is Slurm's).
                out.append(Host(name=node.name, address=node.address, local=False, shared_job_dir=True,
                                cpus=tuple(range(allocated)),
                                cpu_flags=frozenset(probe.cpu_flags) if probe else frozenset()))
            except ValueError as exc:
                raise LaunchError(f"slurm node {node.name}: {exc}") from None
        return tuple(out)

    def rank_groups(self, plan):
        if plan.spec.mode == "mpirun":
            from launcher.run.mpirun import MpirunGroup

            return [MpirunGroup(plan)]  # inside the allocation Open MPI starts its daemons through Slurm
        from launcher.run.slurm import SlurmStepGroup

        return [SlurmStepGroup(plan, self.environ)]

    def dry_run_text(self, plan) -> str:
        from launcher.run.slurm import rank_step_argv, scheduler_step_argv

        lines = ["", f"Slurm job {self.allocation.job_id}: nodes {', '.join(self.allocation.node_names)}"]
        if plan.spec.mode == "mpirun":
            lines.append(f"  mpirun (Open MPI's Slurm support): bash {shlex.quote(str(plan.spec.job_dir / 'mpirun.sh'))}")
            return "\n".join(lines) + "\n"
        if plan.scheduler is not None:
            lines.append("  scheduler step: " + " ".join(shlex.quote(w) for w in scheduler_step_argv(plan)))
        lines.append("  ranks step:     " + " ".join(shlex.quote(w) for w in rank_step_argv(plan)))
        return "\n".join(lines) + "\n"
