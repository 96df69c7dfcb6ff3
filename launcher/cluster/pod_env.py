"""What a Kubernetes operator tells a pod about its place in the job, read from the environment.

Each operator says it differently; this module turns each into one :class:`PodPlace`:

Volcano (batch.volcano.sh Job, plugins ``env`` and ``svc``)
    VC_TASK_INDEX / VK_TASK_INDEX   this pod's index in its task (same value; env plugin)
    VC_<TASK>_HOSTS                  every pod of the task, "<job>-<task>-<i>.<job>", comma-separated
    VC_<TASK>_NUM                    the task's replicas (svc plugin; <TASK> upper-cased, '-' -> '_')
    Volcano runs no MindSpore scheduler of its own: the first worker pod runs it, at the
    first host of VC_<TASK>_HOSTS (the svc plugin's headless Service resolves it).
MSJob (mindspore.gitee.com, ms-operator)
    MS_ROLE (MS_SCHED on the Scheduler pod, MS_WORKER on Worker pods), MS_SCHED_HOST,
    MS_SCHED_PORT, MS_WORKER_NUM (worker processes: one per Worker pod), MS_NODE_ID (the
    Worker pod's index).
AscendJob (mindxdl.gitee.com, MindCluster ascend-operator)
    MS_ROLE, MS_SCHED_HOST, MS_SCHED_PORT, MS_NODE_RANK (the pod's index), MS_WORKER_NUM
    (worker processes in the job), MS_LOCAL_WORKER (worker processes in this pod),
    ASCEND_VISIBLE_DEVICES (the NPUs given to this pod); with a rank table,
    RANK_TABLE_FILE = the mounted ``rings-config-<job>`` ConfigMap's hccl.json.
    XDL_IP (the node's IP, set from status.hostIP by our manifests, as MindCluster's
    examples do) picks this pod's server in the rank table.

Pure: takes a mapping, never os.environ itself. Every problem is a PodEnvError whose
message names the variable and what is wrong with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

from launcher.job.platforms import MAX_DEVICE_ID, MAX_DEVICES_PER_HOST
from launcher.job.safe_text import visible
from launcher.job.strict_numbers import whole_number

OPERATORS = ("volcano", "msjob", "ascendjob")
MS_SCHED = "MS_SCHED"
MS_WORKER = "MS_WORKER"
DEFAULT_VOLCANO_TASK = "worker"


class PodEnvError(ValueError):
    """The operator's environment is missing or contradicts something; one line naming the variable."""


@dataclass(frozen=True)
class PodPlace:
    """This pod's place in the job.

    pod_index / pod_count: among the pods that run training ranks (worker pods).
    scheduler_only: this pod runs the MindSpore scheduler and no rank (MSJob/AscendJob
        Scheduler replica). runs_scheduler: this worker pod also runs the scheduler
        (Volcano: the first worker pod).
    worker_num / local_workers: worker processes in the job / in this pod, when the operator
        says (None: the launcher's --devices decides).
    visible_devices: device ids given to this pod (ASCEND_VISIBLE_DEVICES), when set.
    hosts: the worker pods' addresses in index order, when the operator lists them.
    """

    operator: str
    pod_index: int
    pod_count: int
    scheduler_only: bool = False
    runs_scheduler: bool = False
    sched_host: Optional[str] = None
    sched_port: Optional[int] = None
    worker_num: Optional[int] = None
    local_workers: Optional[int] = None
    visible_devices: Optional[tuple[int, ...]] = None
    rank_table_file: Optional[str] = None
    host_ip: Optional[str] = None
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ValueError(f"operator {self.operator!r}: use one of {', '.join(OPERATORS)}")
        if self.pod_count < 1:
            raise ValueError(f"{self.operator}: {self.pod_count} worker pods; at least 1 is needed")
        if not self.scheduler_only and not 0 <= self.pod_index < self.pod_count:
            raise ValueError(f"{self.operator}: pod index {self.pod_index} is outside 0..{self.pod_count - 1}")
        if self.sched_port is not None and not 0 < self.sched_port < 65536:
            raise ValueError(f"{self.operator}: scheduler port {self.sched_port} is not in 1..65535")
        if self.hosts and len(self.hosts) != self.pod_count:
            raise ValueError(f"{self.operator}: {len(self.hosts)} hosts listed for {self.pod_count} pods")
        if self.scheduler_only and self.runs_scheduler:
            raise ValueError(f"{self.operator}: a pod is either the scheduler pod or a worker pod")

    def ranks_per_pod(self, devices: Optional[int]) -> int:
        """Ranks this pod starts: --devices, else what the operator says, else the visible devices, else 1.

        A --devices that contradicts the operator is an error: the other pods compute
        their ranks from the same numbers, and a disagreement gives two pods one rank.
        """
        said = self.local_workers
        if said is None and self.worker_num is not None and self.operator == "msjob":
            said = self.worker_num // self.pod_count if self.worker_num % self.pod_count == 0 else None
        if devices is not None:
            if devices < 1:
                raise PodEnvError(f"--devices {devices}: must be at least 1")
            if self.local_workers is not None and devices != self.local_workers:
                raise PodEnvError(f"--devices {devices}: MS_LOCAL_WORKER={self.local_workers} says "
                                  f"this pod runs {self.local_workers} workers")
            return devices
        if said is not None:
            return said
        if self.visible_devices:
            return len(self.visible_devices)
        return 1

    def first_rank(self, per_pod: int) -> int:
        """Global rank of this pod's first rank: pods hold consecutive rank ranges, in pod order."""
        return self.pod_index * per_pod

    def rank_size(self, per_pod: int) -> int:
        """Ranks in the whole job; checked against MS_WORKER_NUM when the operator set it."""
        total = self.pod_count * per_pod
        if self.worker_num is not None and self.worker_num not in (total, self.pod_count):
            raise PodEnvError(f"MS_WORKER_NUM={self.worker_num}: the job has {self.pod_count} pods x "
                              f"{per_pod} ranks = {total} workers")
        return total


def detect_operator(environ: Mapping[str, str]) -> Optional[str]:
    """Which operator made this pod, from its variables; None when none of them is there."""
    if "VC_TASK_INDEX" in environ or "VK_TASK_INDEX" in environ:
        return "volcano"
    if "MS_NODE_RANK" in environ or "MS_LOCAL_WORKER" in environ:
        return "ascendjob"
    if "MS_ROLE" in environ and "MS_SCHED_HOST" in environ:
        return "msjob"
    return None


def read_pod_place(operator: Optional[str], environ: Mapping[str, str], *,
                   volcano_task: str = DEFAULT_VOLCANO_TASK, sched_port: Optional[int] = None) -> PodPlace:
    """The pod's place for ``operator`` (detected when None).

    sched_port: the port the manifests gave the scheduler (Volcano has no variable for it;
    for MSJob/AscendJob it must agree with MS_SCHED_PORT when both are given).
    """
    if operator is None:
        operator = detect_operator(environ)
        if operator is None:
            raise PodEnvError("--from-env: none of the variables Volcano (VC_TASK_INDEX), MSJob (MS_ROLE, "
                              "MS_SCHED_HOST) or AscendJob (MS_NODE_RANK) set is in the environment")
    try:
        if operator == "volcano":
            return _volcano(environ, volcano_task, sched_port)
        if operator == "msjob":
            return _msjob(environ, sched_port)
        if operator == "ascendjob":
            return _ascendjob(environ, sched_port)
    except ValueError as err:
        if isinstance(err, PodEnvError):
            raise
        raise PodEnvError(str(err)) from None
    raise PodEnvError(f"--k8s-kind {operator!r}: use one of {', '.join(OPERATORS)}")


def volcano_env_key(task: str) -> str:
    """The <TASK> part of VC_<TASK>_HOSTS for a task name, as Volcano's svc plugin forms it."""
    return task.replace("-", "_").upper()


def _volcano(environ: Mapping[str, str], task: str, sched_port: Optional[int]) -> PodPlace:
    vc, vk = environ.get("VC_TASK_INDEX"), environ.get("VK_TASK_INDEX")
    if vc is None and vk is None:
        raise PodEnvError("VC_TASK_INDEX: not set (the Volcano job needs `plugins: {env: []}`)")
    if vc is not None and vk is not None and vc != vk:
        raise PodEnvError(f"VC_TASK_INDEX={vc!r} and VK_TASK_INDEX={vk!r}: Volcano sets them equal")
    index = _count(environ, "VC_TASK_INDEX" if vc is not None else "VK_TASK_INDEX")
    key = volcano_env_key(task)
    hosts_name, num_name = f"VC_{key}_HOSTS", f"VC_{key}_NUM"
    hosts_text = environ.get(hosts_name)
    if not hosts_text:
        raise PodEnvError(f"{hosts_name}: not set (the Volcano job needs `plugins: {{svc: []}}` "
                          f"and a task named {task!r})")
    hosts = tuple(h.strip() for h in hosts_text.split(",") if h.strip())
    count = _count(environ, num_name) if num_name in environ else len(hosts)
    if count != len(hosts):
        raise PodEnvError(f"{num_name}={count}: {hosts_name} lists {len(hosts)} hosts")
    if index >= count:
        raise PodEnvError(f"VC_TASK_INDEX={index}: the task has {count} pods (0..{count - 1})")
    return PodPlace(
        operator="volcano", pod_index=index, pod_count=count, runs_scheduler=index == 0,
        sched_host=hosts[0], sched_port=sched_port, hosts=hosts,
        visible_devices=_device_list(environ, "ASCEND_VISIBLE_DEVICES"),
        rank_table_file=environ.get("RANK_TABLE_FILE") or None,
        host_ip=environ.get("XDL_IP") or None,
    )


def _scheduler_address(environ: Mapping[str, str], sched_port: Optional[int]) -> tuple[str, int]:
    host = environ.get("MS_SCHED_HOST", "").strip()
    if not host:
        raise PodEnvError("MS_SCHED_HOST: not set or empty")
    port = _count(environ, "MS_SCHED_PORT")
    if sched_port is not None and sched_port != port:
        raise PodEnvError(f"MS_SCHED_PORT={port}: the manifests gave the scheduler port {sched_port} (--sched-port)")
    return host, port


def _role(environ: Mapping[str, str]) -> str:
    role = environ.get("MS_ROLE")
    if role not in (MS_SCHED, MS_WORKER):
        raise PodEnvError(f"MS_ROLE={role!r}: expected {MS_SCHED} or {MS_WORKER}" if role is not None
                          else "MS_ROLE: not set")
    return role


def _msjob(environ: Mapping[str, str], sched_port: Optional[int]) -> PodPlace:
    role = _role(environ)
    host, port = _scheduler_address(environ, sched_port)
    workers = _count(environ, "MS_WORKER_NUM", minimum=1)
    if role == MS_SCHED:
        return PodPlace(operator="msjob", pod_index=0, pod_count=workers, scheduler_only=True,
                        sched_host=host, sched_port=port, worker_num=workers)
    index = _count(environ, "MS_NODE_ID")
    if index >= workers:
        raise PodEnvError(f"MS_NODE_ID={index}: MS_WORKER_NUM={workers} worker pods (0..{workers - 1})")
    return PodPlace(operator="msjob", pod_index=index, pod_count=workers, sched_host=host,
                    sched_port=port, worker_num=workers,
                    visible_devices=_device_list(environ, "ASCEND_VISIBLE_DEVICES"))


def _ascendjob(environ: Mapping[str, str], sched_port: Optional[int]) -> PodPlace:
    role = _role(environ)
    host, port = _scheduler_address(environ, sched_port)
    workers = _count(environ, "MS_WORKER_NUM", minimum=1)
    local = _count(environ, "MS_LOCAL_WORKER", minimum=1) if "MS_LOCAL_WORKER" in environ else None
    devices = _device_list(environ, "ASCEND_VISIBLE_DEVICES")
    if local is None and devices:
        local = len(devices)
    if local is not None and workers % local:
        raise PodEnvError(f"MS_WORKER_NUM={workers}: not a multiple of MS_LOCAL_WORKER={local}")
    pods = workers // local if local else workers
    table = environ.get("RANK_TABLE_FILE") or None
    if role == MS_SCHED:
        return PodPlace(operator="ascendjob", pod_index=0, pod_count=pods, scheduler_only=True,
                        sched_host=host, sched_port=port, worker_num=workers, local_workers=local,
                        rank_table_file=table)
    index = _count(environ, "MS_NODE_RANK")
    if index >= pods:
        raise PodEnvError(f"MS_NODE_RANK={index}: the job has {pods} worker pods "
                          f"(MS_WORKER_NUM={workers} / MS_LOCAL_WORKER={local})")
    if devices is not None and local is not None and len(devices) != local:
        raise PodEnvError(f"ASCEND_VISIBLE_DEVICES={environ['ASCEND_VISIBLE_DEVICES']!r}: "
                          f"{len(devices)} devices for MS_LOCAL_WORKER={local}")
    return PodPlace(operator="ascendjob", pod_index=index, pod_count=pods, sched_host=host,
                    sched_port=port, worker_num=workers, local_workers=local,
                    visible_devices=devices, rank_table_file=table,
                    host_ip=environ.get("XDL_IP") or None)


# Far beyond any job; what matters is that a typo is one line, not a list of billions.
MAX_POD_NUMBER = 1_000_000


def _count(environ: Mapping[str, str], name: str, minimum: int = 0) -> int:
    text = environ.get(name)
    if text is None:
        raise PodEnvError(f"{name}: not set")
    try:
        return whole_number(text.strip(), name, minimum, MAX_POD_NUMBER)
    except ValueError:
        raise PodEnvError(f"{name}={visible(text, 40)!r}: expected a whole number "
                          f"{minimum}..{MAX_POD_NUMBER} (digits 0-9)") from None


def _device_id(text: str) -> Optional[int]:
    """An id of ASCII digits within MAX_DEVICE_ID, else None ("¹".isdigit() is true, int("¹") fails)."""
    try:
        return whole_number(text, "device id", 0, MAX_DEVICE_ID)
    except ValueError:
        return None


def _device_list(environ: Mapping[str, str], name: str) -> Optional[tuple[int, ...]]:
    """ASCEND_VISIBLE_DEVICES as the Ascend device plugin writes it: "0,1,2,3" (ranges "0-3" accepted)."""
    text = environ.get(name)
    if text is None or not text.strip():
        return None
    shown = visible(text, 80)
    ids: list[int] = []
    for item in text.split(","):
        item = item.strip()
        low_text, dash, high_text = item.partition("-")
        single, low, high = _device_id(item), _device_id(low_text), _device_id(high_text)
        if single is not None:
            ids.append(single)
        elif dash and low is not None and high is not None:
            if low > high:
                raise PodEnvError(f"{name}={shown!r}: {visible(item, 40)!r} is an empty range")
            ids += range(low, high + 1)
        else:
            # "Ascend910-0,Ascend910-1" is what the device plugin's annotation holds for some versions.
            prefix, _, tail = item.rpartition("-")
            if not prefix or _device_id(tail) is None:
                raise PodEnvError(f"{name}={shown!r}: {visible(item, 40)!r} is not a device id "
                                  f"(0..{MAX_DEVICE_ID})")
            ids.append(_device_id(tail))
        if len(ids) > MAX_DEVICES_PER_HOST:
            raise PodEnvError(f"{name}={shown!r}: more than {MAX_DEVICES_PER_HOST} devices")
    if len(set(ids)) != len(ids):
        raise PodEnvError(f"{name}={shown!r}: a device is listed twice")
    return tuple(ids)
