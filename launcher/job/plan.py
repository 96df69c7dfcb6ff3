"""The plan: a pure function from a JobSpec to the ordered ranks of a job.

Every consumer (dry-run printing, template rendering, local and remote starting,
job.json, collect-results) reads the plan; nothing downstream decides what a rank gets.
Ranks are host-major: host 0's devices first, then host 1's (the order mpirun's
by-slot mapping and MindSpore's node ids follow).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Sequence

from launcher.job.hosts import Host
from launcher.job.platform_timeouts import platform_timeout_env
from launcher.job.rank_env import PLANNED_RANKS_VAR, JOB_MARKER_VAR, job_env
from launcher.job.spec import JobSpec

SCHEDULER_MODULE = "launcher.run.ms_scheduler"


def _frozen(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Rank:
    """One training process.

    launch_env: what the start mode defines (RANK_ID, MS_ROLE, RANK_TABLE_FILE, ...).
    tuning_env: platform tuning (CPU: oneDNN ISA cap and thread counts).
    user_env: ``--env`` values; they win over the other two.
    log_dir: the rank's working directory, relative to the job directory.
    cpus: cores the rank is bound to, or None when not bound.
    """

    rank: int
    host: str
    host_index: int
    local_index: int
    device_id: int
    command: tuple[str, ...]
    log_dir: str
    cpus: Optional[tuple[int, ...]]
    launch_env: Mapping[str, str] = field(default_factory=dict)
    tuning_env: Mapping[str, str] = field(default_factory=dict)
    user_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rank < 0 or self.local_index < 0 or self.host_index < 0 or self.device_id < 0:
            raise ValueError(f"rank {self.rank}: indices must be non-negative")
        if self.log_dir != f"LOG{self.rank}":
            raise ValueError(f"rank {self.rank}: log dir must be LOG{self.rank}, got {self.log_dir}")
        if not self.command:
            raise ValueError(f"rank {self.rank}: empty command")
        if self.cpus is not None and not self.cpus:
            raise ValueError(f"rank {self.rank}: cpu binding with no cores")
        for name in ("launch_env", "tuning_env", "user_env"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    @property
    def env(self) -> dict[str, str]:
        """Everything the rank gets on top of the inherited environment (user values win)."""
        return {**self.tuning_env, **self.launch_env, **self.user_env}


@dataclass(frozen=True)
class Scheduler:
    """The dynamic-cluster scheduler: a MindSpore process with MS_ROLE=MS_SCHED on the first host."""

    host: str
    address: str
    port: int
    command: tuple[str, ...]
    env: Mapping[str, str]
    log_dir: str = "scheduler"

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", _frozen(self.env))


@dataclass(frozen=True)
class HostSlots:
    host: Host
    slots: int


@dataclass(frozen=True)
class Plan:
    spec: JobSpec
    ranks: tuple[Rank, ...]
    hosts: tuple[HostSlots, ...]
    scheduler: Optional[Scheduler] = None
    attempt: int = 0  # 0: the first run; N: the N-th restart (LAUNCH_TRAIN_RESTART_COUNT)
    # One host's slice of a multi-host plan (launcher.remote.host_slice): only that host's ranks,
    # which is all its agent runs; rank_size is then the slice's, not the job's.
    host_slice: Optional[str] = None

    def __post_init__(self) -> None:
        numbers = [r.rank for r in self.ranks]
        if self.host_slice is not None:
            if numbers != sorted(set(numbers)):
                raise ValueError(f"the slice of host {self.host_slice}: ranks must be distinct and in order")
        elif numbers != list(range(len(self.ranks))):
            raise ValueError("plan ranks must be numbered 0..N-1 in order")
        if (self.scheduler is None) != (self.spec.mode != "dynamic"):
            raise ValueError("a scheduler belongs to dynamic mode and only to it")
        if self.attempt < 0:
            raise ValueError(f"attempt {self.attempt}: must be 0 or more")

    @property
    def rank_size(self) -> int:
        return len(self.ranks)

    def ranks_on(self, host_name: str) -> tuple[Rank, ...]:
        return tuple(r for r in self.ranks if r.host == host_name)


def split_cores(cpus: Sequence[int], ranks: int) -> list[tuple[int, ...]]:
    """Cores split evenly between ``ranks`` (earlier ranks get the remainder); shared when too few."""
    if ranks < 1:
        raise ValueError("split_cores needs at least one rank")
    if not cpus:
        raise ValueError("split_cores needs at least one core")
    if ranks >= len(cpus):
        return [(cpus[i % len(cpus)],) for i in range(ranks)]
    base, extra = divmod(len(cpus), ranks)
    out: list[tuple[int, ...]] = []
    start = 0
    for i in range(ranks):
        size = base + (1 if i < extra else 0)
        out.append(tuple(cpus[start : start + size]))
        start += size
    return out


def plan_job(spec: JobSpec, attempt: Optional[int] = None) -> Plan:
    """JobSpec -> Plan of attempt ``attempt`` (default: the spec's first). Pure: no files, no processes, no clock."""
    if attempt is None:
        attempt = spec.first_attempt
    command = spec.entry.argv(spec.python) + spec.args
    per_host = len(spec.devices)
    rank_size = spec.rank_size
    table_ranks = _rank_table_ranks(spec) if spec.mode == "rank-table" else None
    ranks: list[Rank] = []
    for host_index, host in enumerate(spec.hosts):
        cores = split_cores(host.cpus, per_host) if (spec.bind_cores and host.cpus) else [None] * per_host
        for local_index, device_id in enumerate(spec.devices):
            rank_id = (
                table_ranks[(host_index, device_id)] if table_ranks is not None else host_index * per_host + local_index
            )
            cpus = cores[local_index]
            ranks.append(
                Rank(
                    rank=rank_id,
                    host=host.name,
                    host_index=host_index,
                    local_index=local_index,
                    device_id=device_id,
                    command=command,
                    log_dir=f"LOG{rank_id}",
                    cpus=cpus,
                    launch_env=_launch_env(spec, attempt, host_index, local_index, device_id, rank_id, rank_size),
                    tuning_env=_tuning_env(spec, host, cpus, per_host),
                    user_env=spec.env,
                )
            )
    ranks.sort(key=lambda r: r.rank)
    scheduler = _scheduler(spec) if spec.mode == "dynamic" else None
    return Plan(
        spec=spec,
        ranks=tuple(ranks),
        hosts=tuple(HostSlots(h, per_host) for h in spec.hosts),
        scheduler=scheduler,
        attempt=attempt,
    )


def plan_restart(plan: Plan) -> Plan:
    """The plan of the next attempt: the same ranks and commands, LAUNCH_TRAIN_RESTART_COUNT one higher.

    The program decides what a restart means (deeplab-train resumes from the newest
    checkpoint in LAUNCH_TRAIN_CKPT_DIR); its arguments are never rewritten.
    """
    return plan_job(plan.spec, attempt=plan.attempt + 1)


def _launch_env(spec: JobSpec, attempt: int, host_index: int, local_index: int, device_id: int, rank: int,
                size: int) -> dict:
    env = {
        **job_env(spec.job_dir, platform=spec.platform, attempt=attempt, max_restarts=spec.max_restarts,
                  save_on_signal=spec.save_grace_s > 0),
        "RANK_ID": str(rank),
        "RANK_SIZE": str(size),
        "DEVICE_ID": str(device_id),
    }
    if spec.planned_rank_size is not None and spec.planned_rank_size != size:
        env[PLANNED_RANKS_VAR] = str(spec.planned_rank_size)
    if spec.platform == "GPU":
        # MindSpore picks the GPU by local rank among the visible ones.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, spec.devices))
        env["DEVICE_ID"] = str(local_index)
    env.update(platform_timeout_env(spec.hang, spec.platform, spec.mode))
    if spec.mode == "dynamic":
        env.update(_scheduler_address_env(spec))
        env["MS_ROLE"] = "MS_WORKER"
        env["MS_NODE_ID"] = str(rank)
    elif spec.mode == "rank-table":
        env["RANK_TABLE_FILE"] = str(spec.job_dir / "rank_table.json")
        env["SERVER_ID"] = str(host_index)
    return env


def _scheduler_address_env(spec: JobSpec) -> dict[str, str]:
    return {
        "MS_SCHED_HOST": spec.hosts[0].address,
        "MS_SCHED_PORT": str(spec.sched_port),
        "MS_WORKER_NUM": str(spec.rank_size),
    }


def _tuning_env(spec: JobSpec, host: Host, cpus: Optional[tuple[int, ...]], per_host: int) -> dict[str, str]:
    if spec.platform != "CPU":
        return {}
    from cpu_env import tuned_cpu_env

    if cpus is not None:
        threads = len(cpus)
    else:
        threads = max(1, len(host.cpus) // per_host) if host.cpus else 1
    return tuned_cpu_env(threads=threads, cpu_flags=host.cpu_flags)


def _scheduler(spec: JobSpec) -> Scheduler:
    first = spec.hosts[0]
    env = {
        JOB_MARKER_VAR: str(spec.job_dir),
        "PYTHONUNBUFFERED": "1",
        **_scheduler_address_env(spec),
        **platform_timeout_env(spec.hang, spec.platform, spec.mode),
        "MS_ROLE": "MS_SCHED",
        "OMP_NUM_THREADS": "1",
        **spec.env,
    }
    return Scheduler(
        host=first.name,
        address=first.address,
        port=int(spec.sched_port),  # type: ignore[arg-type]  # JobSpec checks dynamic has a port
        command=(spec.python, "-m", SCHEDULER_MODULE),
        env=env,
    )


def _rank_table_ranks(spec: JobSpec) -> dict[tuple[int, int], int]:
    """(host index, device id) -> rank id as the rank table numbers them; the table must match the job."""
    table = spec.rank_table
    servers = list(table.servers)
    chosen = []
    for host_index, host in enumerate(spec.hosts):
        matches = [s for s in servers if s.server_id in (host.address, host.name)]
        if not matches and len(servers) == len(spec.hosts):
            matches = [servers[host_index]]  # tables are in host order when ids are not addresses
        if len(matches) != 1:
            raise ValueError(f"rank table: no server entry for host {host.name} ({host.address})")
        chosen.append(matches[0])
    out: dict[tuple[int, int], int] = {}
    for host_index, server in enumerate(chosen):
        table_devices = {int(d.device_id): int(d.rank_id) for d in server.devices}
        if sorted(table_devices) != sorted(spec.devices):
            raise ValueError(
                f"rank table: server {server.server_id} lists devices {sorted(table_devices)}, "
                f"the job uses {list(spec.devices)}"
            )
        for device_id in spec.devices:
            out[(host_index, device_id)] = table_devices[device_id]
    if sorted(out.values()) != list(range(spec.rank_size)):
        raise ValueError(f"rank table: rank ids must be 0..{spec.rank_size - 1}, got {sorted(out.values())}")
    return out
