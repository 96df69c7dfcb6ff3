"""Which ranks this pod runs: global rank, device and local index of each, from its PodPlace.

Pods hold consecutive rank ranges in pod order (pod i: ranks i*D .. i*D+D-1), the rule
every pod applies alike, so no two pods start the same rank ("all pods got rank 0").
With a rank table the table decides instead: this pod's server is the one whose
server_id (or host_ip) is the node's address XDL_IP, else the pod_index-th server in
the table's order, and its ranks are that server's devices and rank ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hccl.model import RankTable, Server
from launcher.cluster.pod_env import PodEnvError, PodPlace


@dataclass(frozen=True)
class PodRank:
    rank: int
    device_id: int
    local_index: int

    def __post_init__(self) -> None:
        if self.rank < 0 or self.device_id < 0 or self.local_index < 0:
            raise ValueError(f"pod rank {self.rank}: rank, device and local index must be >= 0")


def pod_ranks(place: PodPlace, per_pod: int, table: Optional[RankTable] = None) -> tuple[PodRank, ...]:
    """This pod's ranks; PodEnvError when the environment and the table disagree."""
    if place.scheduler_only:
        return ()
    if table is not None:
        server = pod_server(place, table)
        if len(server.devices) != per_pod:
            raise PodEnvError(f"rank table: server {server.server_id} has {len(server.devices)} devices; "
                              f"this pod runs {per_pod} ranks (--devices / MS_LOCAL_WORKER)")
        return tuple(PodRank(d.rank_id, d.device_id, i) for i, d in enumerate(server.devices))
    devices = place.visible_devices
    if devices is not None and len(devices) != per_pod:
        raise PodEnvError(f"ASCEND_VISIBLE_DEVICES lists {len(devices)} devices; this pod runs {per_pod} ranks")
    first = place.first_rank(per_pod)
    # Inside a container the runtime shows the pod's devices as 0..N-1: DEVICE_ID is the local index.
    return tuple(PodRank(first + i, i, i) for i in range(per_pod))


def pod_server(place: PodPlace, table: RankTable) -> Server:
    """The table's server for this pod: by the node address XDL_IP, else by pod index."""
    if place.host_ip:
        matches = [s for s in table.servers if place.host_ip in (s.server_id, s.effective_host_ip)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise PodEnvError(f"XDL_IP={place.host_ip}: {len(matches)} servers of the rank table have it")
    if place.pod_count != table.server_count:
        raise PodEnvError(f"rank table: {table.server_count} servers for {place.pod_count} worker pods")
    return table.servers[place.pod_index]
