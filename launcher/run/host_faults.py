"""Which failures are a host's: the attempt's lost hosts, for excluding them and taking a spare.

A failure is the host's (not the program's) when
  * its agent is lost: the SSH connection closed, its heartbeats stopped, it could not be started;
    or Slurm failed the node under the job's step (the group says so: ``ProcessGroup.lost_hosts()``);
  * every rank on it was killed by a signal, not by the launcher, while the job ran (a node that
    rebooted, an OOM killer emptying the machine) -- for hosts with two ranks or more, since one
    killed rank alone says nothing about its host;
  * a rank's log ends with a device error (an NPU/HCCL fault, a GPU Xid or ECC error).
Everything else -- a Python error in rank 3 -- is the program's: the job restarts on the same hosts.
Pure: reads only what the groups and the exits say.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Optional, Sequence

from launcher.run.failures import RankExit, RankFailure

# Lines a device fault leaves in a rank's log (Ascend runtime and HCCL error codes, NVIDIA Xid and ECC).
DEVICE_ERROR = re.compile(
    r"(HCCL|hccl)[^\n]{0,120}(device|link|network)[^\n]{0,40}(error|fail|down|lost)"
    r"|\bEL0004\b|\bEI9999\b|\bEE9999\b|device (is )?(lost|unavailable|fault)"
    r"|npu[^\n]{0,40}(fault|lost|hang)|uncorrectable ECC|\bXid\b[^\n]{0,20}\d+|CUDA error: (an illegal memory|ECC)",
    re.IGNORECASE,
)


def lost_hosts(groups: Sequence, exits: Sequence[RankExit], first_failure: Optional[RankFailure],
               ranks_by_host: dict[str, Sequence[int]]) -> dict[str, str]:
    """host name -> why it is counted as lost, for every host this attempt lost."""
    lost: dict[str, str] = {}
    for group in groups:
        for host, reason in group.lost_hosts().items():
            lost.setdefault(host, reason)
    killed: dict[str, list[RankExit]] = defaultdict(list)
    for exit_ in exits:
        if exit_.signal is not None and not exit_.stopped_by_launcher:
            killed[exit_.host].append(exit_)
    for host, ranks in ranks_by_host.items():
        dead = killed.get(host, [])
        if len(ranks) >= 2 and len(dead) == len(ranks) and len(ranks_by_host) > 1:
            lost.setdefault(host, f"every rank on it was killed ({dead[0].signal_name})")
    if first_failure is not None and first_failure.tail:
        match = DEVICE_ERROR.search(first_failure.tail)
        if match:
            line = next(line for line in first_failure.tail.splitlines() if match.group(0) in line)
            lost.setdefault(first_failure.host, f"device error in rank {first_failure.rank}'s log: {line.strip()[:160]}")
    return lost
