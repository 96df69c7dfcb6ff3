"""Which distributed start-up this process was given, and joining it.

The training program knows nothing about the launcher: it reads the environment that
MindSpore's own start-ups define, so `launch-train`, `msrun`, `mpirun` or a person with
a shell can all start it.

| start        | variables read                                                      |
| ------------ | ------------------------------------------------------------------- |
| dynamic      | MS_ROLE=MS_WORKER, MS_WORKER_NUM, MS_NODE_ID (rank), MS_SCHED_HOST, |
|              | MS_SCHED_PORT; optional MS_LOCAL_WORKER (workers on this host)      |
| rank-table   | RANK_TABLE_FILE, RANK_ID, RANK_SIZE, DEVICE_ID                      |
| mpirun       | OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_  |
|              | RANK, OMPI_COMM_WORLD_LOCAL_SIZE                                    |
| none         | nothing of the above: one process, rank 0 of 1                      |

:func:`detect` is pure (a mapping in, a :class:`DistributedStart` out) so every case is
tested without MindSpore; :func:`join` is the effect (``mindspore.communication.init``
and the data-parallel context) and imports MindSpore lazily.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from deeplab.runtime import DEVICE_TARGETS

MODES = ("none", "dynamic", "rank-table", "mpirun")


class DistributedError(ValueError):
    """The environment describes a distributed start that cannot work; the message says why."""


@dataclass(frozen=True)
class DistributedStart:
    """What this process is within its job."""

    mode: str
    rank_id: int = 0
    rank_size: int = 1
    local_rank: int = 0
    local_size: Optional[int] = None  # ranks on this host, when the start-up says so
    device_id: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.rank_size < 1:
            raise ValueError(f"rank_size must be >= 1, got {self.rank_size}")
        if not 0 <= self.rank_id < self.rank_size:
            raise ValueError(f"rank_id must be in [0, {self.rank_size}), got {self.rank_id}")
        if self.local_size is not None and not 0 <= self.local_rank < self.local_size:
            raise ValueError(f"local_rank must be in [0, {self.local_size}), got {self.local_rank}")
        if self.mode == "none" and self.rank_size != 1:
            raise ValueError("a single-process start has rank_size 1")

    @property
    def is_distributed(self) -> bool:
        return self.mode != "none"

    @property
    def ranks_on_host(self) -> int:
        """Ranks sharing this host's cores; all ranks when the start-up does not say (the safe guess)."""
        return self.local_size if self.local_size is not None else self.rank_size


def _int_var(env: Mapping[str, str], name: str, *, required: bool = True, default: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        if required:
            raise DistributedError(f"environment variable {name} is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"environment variable {name}={raw!r} is not an integer") from None


def _checked(mode: str, **fields: object) -> DistributedStart:
    try:
        return DistributedStart(mode, **fields)  # type: ignore[arg-type]
    except ValueError as err:
        raise DistributedError(f"{mode} start: {err}") from None


def detect(env: Optional[Mapping[str, str]] = None) -> DistributedStart:
    """The distributed start described by ``env`` (default ``os.environ``).

    Dynamic cluster wins over the others because MindSpore itself prefers it when both
    MS_ROLE and Open MPI variables are present.
    """
    env = os.environ if env is None else env
    role = env.get("MS_ROLE")
    if role:
        if role == "MS_SCHED":
            raise DistributedError(
                "MS_ROLE=MS_SCHED: this process is the dynamic-cluster scheduler; start the scheduler "
                "as its own process and run deeplab-train only in MS_WORKER processes"
            )
        if role != "MS_WORKER":
            raise DistributedError(f"MS_ROLE={role!r} is not supported (expected MS_WORKER)")
        for name in ("MS_SCHED_HOST", "MS_SCHED_PORT"):
            if not env.get(name):
                raise DistributedError(f"MS_ROLE=MS_WORKER but environment variable {name} is not set")
        size = _int_var(env, "MS_WORKER_NUM")
        # MS_NODE_ID may be any string (MindSpore then assigns the rank in init()); the
        # launcher and msrun set it, and RANK_ID, to the rank number.
        node_id = env.get("MS_NODE_ID", "")
        fallback = int(node_id) if node_id.isdigit() else 0
        rank = _int_var(env, "RANK_ID", required=False, default=fallback)
        local_size = _int_var(env, "MS_LOCAL_WORKER", required=False, default=0) or None
        local_rank = rank % local_size if local_size else 0
        device = _int_var(env, "DEVICE_ID", required=False, default=local_rank)
        return _checked("dynamic", rank_id=rank, rank_size=size, local_rank=local_rank,
                        local_size=local_size, device_id=device)
    if env.get("RANK_TABLE_FILE"):
        table = env["RANK_TABLE_FILE"]
        if not os.path.isfile(table):
            raise DistributedError(f"RANK_TABLE_FILE {table}: no such file")
        size = _int_var(env, "RANK_SIZE")
        rank = _int_var(env, "RANK_ID")
        device = _int_var(env, "DEVICE_ID")
        return _checked("rank-table", rank_id=rank, rank_size=size, local_rank=device, device_id=device)
    if env.get("OMPI_COMM_WORLD_SIZE"):
        size = _int_var(env, "OMPI_COMM_WORLD_SIZE")
        rank = _int_var(env, "OMPI_COMM_WORLD_RANK")
        local_rank = _int_var(env, "OMPI_COMM_WORLD_LOCAL_RANK", required=False)
        local_size = _int_var(env, "OMPI_COMM_WORLD_LOCAL_SIZE", required=False) or None
        return _checked("mpirun", rank_id=rank, rank_size=size, local_rank=local_rank,
                        local_size=local_size, device_id=local_rank)
    size = _int_var(env, "RANK_SIZE", required=False, default=1)
    if size > 1:
        raise DistributedError(
            f"RANK_SIZE={size} but no distributed start-up is described (set RANK_TABLE_FILE, "
            "run under mpirun, or use the MS_ROLE/MS_WORKER_NUM dynamic cluster variables)"
        )
    return DistributedStart("none", device_id=_int_var(env, "DEVICE_ID", required=False))


def device_target_from_env(env: Optional[Mapping[str, str]] = None) -> str:
    """The device target a process should use when no --device-target is given.

    DEVICE_TARGET when set (launch-train sets it for every rank; any case is accepted);
    else what the start-up implies: a rank table means Ascend, Open MPI means GPU (the
    dynamic cluster runs anywhere, so it implies nothing); else CPU.
    """
    env = os.environ if env is None else env
    named = env.get("DEVICE_TARGET", "").strip()
    if named:
        for target in DEVICE_TARGETS:
            if named.lower() == target.lower():
                return target
        raise DistributedError(f"DEVICE_TARGET={named!r}: must be one of {', '.join(DEVICE_TARGETS)}")
    if env.get("MS_ROLE"):
        return "CPU"
    if env.get("RANK_TABLE_FILE"):
        return "Ascend"
    if env.get("OMPI_COMM_WORLD_SIZE"):
        return "GPU"
    return "CPU"


def check_supported(start: DistributedStart, device_target: str) -> None:
    """Refuse combinations MindSpore cannot run, before they fail or hang inside ``init()``."""
    if start.mode == "mpirun" and device_target == "CPU":
        # Measured: the CPU build fails in init() ("Failed to initialize communication
        # library on device side"), sometimes only after a long wait.
        raise DistributedError(
            "mpirun start on CPU: MindSpore's CPU build cannot initialise communication under Open MPI; "
            "use the dynamic cluster start (launch-train --mode dynamic) instead"
        )
    if start.mode == "rank-table" and device_target != "Ascend":
        raise DistributedError(f"RANK_TABLE_FILE start is for Ascend only, not {device_target}")


def join(start: DistributedStart, device_target: str) -> DistributedStart:
    """Initialise communication for ``start`` and set data-parallel mean gradients.

    Returns the start with rank and size as MindSpore reports them after ``init()``.
    Call after ``ms.set_device``; a single-process start is returned unchanged.
    """
    check_supported(start, device_target)
    if not start.is_distributed:
        return start
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    rank, size = get_rank(), get_group_size()
    if size != start.rank_size:
        raise DistributedError(
            f"MindSpore reports {size} ranks but the environment says {start.rank_size}"
        )
    ms.set_auto_parallel_context(
        parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=size
    )
    return DistributedStart(start.mode, rank_id=rank, rank_size=size, local_rank=start.local_rank,
                            local_size=start.local_size, device_id=start.device_id)
