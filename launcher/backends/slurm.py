"""The slurm backend: launch-train inside a Slurm allocation; hosts are its nodes, ranks one srun step.

``select_backend`` picks it when SLURM_JOB_ID is set and srun exists (and no --hosts/--hostfile
name the hosts), or with ``--launcher slurm``. All before anything is written or started:

  ``from_options(options)``      starts one probe task per node at once (the launcher imports
                                 and plans meanwhile)
  ``discover(options, check=)``  platform (the nodes' Gres when not given), start mode, --devices
                                 from SLURM_NTASKS_PER_NODE or the Gres, no core binding of our
                                 own; then the nodes as plan hosts (name = node name, address =
                                 NodeAddr: what the other nodes reach it by), each node's
                                 hccn.conf text (Ascend), a scheduler port free on the first node,
                                 the GPU ids Slurm allocated; the probe checked the job dir is
                                 visible on every node

and, once the plan exists,

  ``groups(plan)``               ONE SlurmStepGroup (launcher/run/slurm.py; mpirun mode: one mpirun,
                                 which Open MPI starts through the allocation itself)
  ``describe(plan)``             the srun command lines
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
from launcher.backends.base import Backend, Discovered, next_attempt_spec
from launcher.errors import LaunchError
from launcher.job.hosts import Host, PreparedHosts

def in_allocation(environ: Mapping[str, str]) -> bool:
    """Inside a Slurm allocation with srun on PATH: where the slurm backend is the default."""
    job = environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID")
    return bool(job) and shutil.which("srun", path=environ.get("PATH")) is not None


class SlurmBackend(Backend):
    name = "slurm"

    def __init__(self, allocation: SlurmAllocation, environ: Optional[Mapping[str, str]] = None,
                 python: str = sys.executable) -> None:
        self.allocation = allocation
        self.environ = dict(os.environ if environ is None else environ)
        self.python = python
        self.probes: dict[str, NodeProbe] = {}
        self.pool = None  # HostPool of node names: the planned nodes and the spares (settle)
        self._settled = None
        self._hccn: Optional[str] = None
        self._probe: Optional[ProbeRun] = None
        self._probe_key: Optional[tuple] = None

    @classmethod
    def from_options(cls, options, environ: Optional[Mapping[str, str]] = None) -> "SlurmBackend":
        """The current allocation; its per-node probe starts now (read by discover)."""
        try:
            backend = cls(current_allocation(environ), environ)
        except SlurmQueryError as exc:
            raise LaunchError(str(exc)) from None
        backend.start_probe(options, check=not options.dry_run)
        return backend

    def discover(self, options, *, check: bool = True) -> Discovered:
        settled = self.settle(options)
        try:
            return Discovered(settled, self.prepare(settled, check=check))
        finally:
            self.abandon_probe()  # a no-op once prepare has read it

    def close(self) -> None:
        self.abandon_probe()

    # -- the per-node probe ------------------------------------------------------------
    def _wants(self, options, check: bool):
        """(hccn.conf path the probe must read or None, job dir, whether to probe at all)."""
        from launcher.job.platforms import check_platform

        platform = check_platform(options.platform) if options.platform else self._platform_from_gres()
        # Ascend without a rank table lists its devices from each node's hccn.conf (and builds the
        # rank table from them): only the nodes can read theirs.
        hccn = str(options.hccn_conf) if platform == "Ascend" and options.rank_table is None else None
        job_dir = (options.job_dir or Path("jobs") / "new-job").expanduser().resolve()
        return hccn, job_dir, check or hccn is not None

    def start_probe(self, options, check: bool = True) -> None:
        """Start the per-node probe step now; prepare reads it (the launcher imports meanwhile)."""
        if options.hosts or getattr(options, "hostfile", None):
            return  # settle refuses them
        hccn, job_dir, probe = self._wants(options, check)
        if not probe:
            return
        # The marker goes into the job dir's parent: the job dir itself must stay unwritten until the
        # launch has checked everything.
        parent = job_dir.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._probe = ProbeRun(self.python, self.allocation.node_names, parent, hccn, self.environ)
        except ProbeError as exc:
            raise LaunchError(str(exc)) from None
        except OSError as exc:
            raise LaunchError(f"--job-dir {job_dir}: cannot create {parent} ({exc.strerror or exc})") from None
        self._probe_key = (job_dir, hccn)

    def abandon_probe(self) -> None:
        if self._probe is not None:
            self._probe.abandon()
            self._probe = None

    # -- what the resolver needs ---------------------------------------------------------
    def settle(self, options):
        """The options with platform, mode and ranks per node decided for this allocation."""
        from launcher.job.resolve import settle_platform

        if options.hosts:
            raise LaunchError("--hosts: under --launcher slurm the hosts are the allocation's nodes "
                              "(use --launcher ssh to list hosts yourself)")
        if options.hostfile:
            raise LaunchError("--hostfile: under --launcher slurm the hosts are the allocation's nodes "
                              "(use --launcher ssh to list hosts yourself)")
        self.pool = self._node_pool(options)
        platform = options.platform or self._platform_from_gres()
        settled = settle_platform(dataclasses.replace(options, platform=platform))
        # Slurm places and binds the tasks (its task plugin, --cpu-bind): a taskset inside a task could
        # name CPUs outside the task's cgroup. Thread counts still follow the CPUs allocated per node.
        return dataclasses.replace(settled, devices=self._devices(settled, settled.platform), bind_cores=False)

    def prepare(self, options, *, check: bool = True) -> PreparedHosts:
        """Probe every node (job dir visible, CPU flags, free port, hccn.conf); ``options`` settled.

        Without ``check`` (dry runs) the nodes are probed only when their hccn.conf is needed.
        """
        hccn, job_dir, probe = self._wants(options, check)
        if probe:
            if self._probe is None or self._probe_key != (job_dir, hccn):
                self.abandon_probe()  # started for other options (or not at all): look again
                self.start_probe(options, check)
            try:
                self.probes = self._probe.result()
            except ProbeError as exc:
                raise LaunchError(str(exc).replace(f"--job-dir {job_dir.parent}", f"--job-dir {job_dir}")) from None
            finally:
                self._probe = None
        gpu_ids = None
        if options.platform == "GPU":
            # The launcher may run on a login node without GPUs: the nodes' GPUs are what Slurm allocated.
            gpu_ids = tuple(range(self.allocation.devices_per_node("GPU") or options.devices or 1))
        self._settled, self._hccn = options, hccn
        return PreparedHosts(self._hosts(), self._hccn_texts(hccn), self._free_port(options), gpu_ids)

    def _node_pool(self, options):
        """--spare-hosts under Slurm names nodes of the allocation kept aside; the others run the job."""
        from launcher.backends.host_pool import HostPool

        names = list(self.allocation.node_names)
        spares = [name.strip() for name in (options.spare_hosts or "").split(",") if name.strip()]
        unknown = [name for name in spares if name not in names]
        if unknown:
            raise LaunchError(f"--spare-hosts {','.join(unknown)}: not a node of Slurm job {self.allocation.job_id} "
                              f"(its nodes: {','.join(names)})")
        planned = [name for name in names if name not in spares]
        if not planned:
            raise LaunchError("--spare-hosts: every node of the allocation is a spare; none would run the job")
        return HostPool(planned, spares, lambda name: name, options.min_hosts)

    def _free_port(self, options) -> Optional[int]:
        if options.mode != "dynamic" or not self.probes:
            return None
        first = self.pool.planned[0] if self.pool is not None else self.allocation.first.name
        return self.probes[first].free_port

    def replan(self, spec, lost: "dict[str, str]", attempt: int):
        """Without the nodes Slurm failed (srun's "Node failure on N", or a node now DOWN/DRAIN/FAIL/NOT
        RESPONDING): a spare node in each one's place, else fewer nodes (--min-hosts). The nodes were all
        probed at start, spares too: nothing to look at again. None: restart on the same nodes."""
        from launcher.job.job_json import utc_now

        if self.pool is None or self._settled is None:
            return None
        lost = {**self._unavailable(self.pool.planned), **lost}
        if not self.pool.replace(lost, attempt, utc_now()):
            return None
        gpu_ids = spec.devices if spec.platform == "GPU" else None
        return next_attempt_spec(self._settled, spec, attempt, lambda options: PreparedHosts(
            self._hosts(), self._hccn_texts(self._hccn), self._free_port(options), gpu_ids))

    def host_changes(self) -> dict:
        return self.pool.changes() if self.pool is not None else {}

    def _unavailable(self, names) -> "dict[str, str]":
        """Planned nodes Slurm now calls unusable: name -> their state (one scontrol call; none when it fails)."""
        from launcher.cluster.slurm_query import SlurmQueryError, run_client

        try:
            text = run_client(["scontrol", "show", "node", "-o", ",".join(names)], self.environ)
        except SlurmQueryError:
            return {}
        bad = {}
        for line in text.splitlines():
            fields = dict(word.split("=", 1) for word in line.split() if "=" in word)
            state = fields.get("State", "")
            if fields.get("NodeName") in names and any(flag in state for flag in
                                                       ("DOWN", "DRAIN", "FAIL", "NOT_RESPONDING")):
                bad[fields["NodeName"]] = f"Slurm node state {state}"
        return bad

    def _hccn_texts(self, hccn: Optional[str]) -> dict:
        """Each node's hccn.conf as the probe read it there: node name -> (where, text)."""
        if hccn is None:
            return {}
        texts = {}
        for node in self.allocation.nodes:
            probe = self.probes[node.name]
            where = f"{node.name}:{probe.hccn_path}"
            if probe.hccn_error is not None:
                raise LaunchError(f"--hccn-conf {where}: {probe.hccn_error} (needed to list Ascend devices)")
            texts[node.name] = (where, probe.hccn_text or "")
        return texts

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

    def _hosts(self) -> tuple[Host, ...]:
        """The planned nodes in rank order (allocation order, a spare where a node was lost), reached by their
        NodeAddr (never "local": ranks start through srun)."""
        out = []
        cpus = self.allocation.cpus_per_node or (0,) * len(self.allocation.nodes)
        by_name = {node.name: (node, allocated) for node, allocated in zip(self.allocation.nodes, cpus)}
        planned = self.pool.planned if self.pool is not None else list(by_name)
        for node, allocated in (by_name[name] for name in planned):
            probe = self.probes.get(node.name)
            try:
                # cpus: as many as Slurm allocated there (ids only count them: binding is Slurm's).
                out.append(Host(name=node.name, address=node.address, local=False, shared_job_dir=True,
                                cpus=tuple(range(allocated)),
                                cpu_flags=frozenset(probe.cpu_flags) if probe else frozenset()))
            except ValueError as exc:
                raise LaunchError(f"slurm node {node.name}: {exc}") from None
        return tuple(out)

    # -- once the plan exists -----------------------------------------------------------
    def groups(self, plan):
        if plan.spec.mode == "mpirun":
            from launcher.run.mpirun import MpirunGroup

            return [MpirunGroup(plan)]  # inside the allocation Open MPI starts its daemons through Slurm
        from launcher.run.slurm import SlurmStepGroup

        return [SlurmStepGroup(plan, self.environ)]

    def describe(self, plan) -> str:
        from launcher.run.slurm import rank_step_argv, scheduler_step_argv

        lines = ["", f"Slurm job {self.allocation.job_id}: nodes {', '.join(self.allocation.node_names)}"]
        if plan.spec.mode == "mpirun":
            lines.append(f"  mpirun (Open MPI's Slurm support): bash {shlex.quote(str(plan.spec.job_dir / 'mpirun.sh'))}")
            return "\n".join(lines) + "\n"
        if plan.scheduler is not None:
            lines.append("  scheduler step: " + " ".join(shlex.quote(w) for w in scheduler_step_argv(plan)))
        lines.append("  ranks step:     " + " ".join(shlex.quote(w) for w in rank_step_argv(plan)))
        return "\n".join(lines) + "\n"
