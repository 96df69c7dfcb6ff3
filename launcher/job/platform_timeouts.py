"""The platform's own timeouts, set to agree with the hang watchdog (pure).

MindSpore and HCCL give up on a silent peer by themselves, each with its own clock:

  MS_NODE_TIMEOUT         dynamic cluster heartbeat, scheduler <-> workers (default 30 s)
  MS_RECEIVE_MSG_TIMEOUT  a node waiting for a cluster message (default 300 s)
  MS_TOPO_TIMEOUT         every worker registering with the scheduler (default 30 min)
  HCCL_CONNECT_TIMEOUT    Ascend devices building links at init, 120..7200 s (default 120)
  HCCL_EXEC_TIMEOUT       Ascend devices waiting for each other in a task, 68..17340 s,
                          used as a multiple of 68 (default 1800)

(MindSpore dynamic-cluster and CANN environment-variable references.) If one of them
fires first the job dies with the platform's terse message and no stacks; if the
watchdog fires first the user learns which rank is stuck and where. So each is set to
the watchdog's timeout plus the time the watchdog needs to dump every stack and stop
the job; with the watchdog off they keep the platform's defaults. A value the user
gives with --env wins (env.sh exports it last).
"""
from __future__ import annotations

import math
from typing import Optional

from launcher.job.hang_policy import HangPolicy

# Dumping every rank's stack (py-spy, in parallel, 20 s timeout each) and stopping the job.
WATCHDOG_MARGIN_S = 60
HCCL_CONNECT_RANGE = (120, 7200)
HCCL_EXEC_RANGE = (68, 17340)
HCCL_EXEC_UNIT = 68


def _clamp(value: float, bounds: tuple[int, int]) -> int:
    return int(min(max(math.ceil(value), bounds[0]), bounds[1]))


def platform_timeout_env(policy: HangPolicy, platform: str, mode: str) -> dict[str, str]:
    """Environment variables (name -> seconds) for every rank of a job on `platform` in `mode`."""
    env: dict[str, str] = {}
    hang: Optional[float] = policy.hang_timeout_s
    first: Optional[float] = policy.first_step_timeout_s
    if mode == "dynamic":
        if hang is not None:
            later = int(math.ceil(hang)) + WATCHDOG_MARGIN_S
            env["MS_NODE_TIMEOUT"] = str(later)
            env["MS_RECEIVE_MSG_TIMEOUT"] = str(max(300, later))
        if first is not None:
            env["MS_TOPO_TIMEOUT"] = str(int(math.ceil(first)) + WATCHDOG_MARGIN_S)
    if platform == "Ascend":
        if first is not None:
            env["HCCL_CONNECT_TIMEOUT"] = str(_clamp(first + WATCHDOG_MARGIN_S, HCCL_CONNECT_RANGE))
        if hang is not None:
            # HCCL uses value // 68 * 68: round up so the real timeout is not below ours.
            wanted = _clamp(hang + WATCHDOG_MARGIN_S, HCCL_EXEC_RANGE)
            rounded = min(-(-wanted // HCCL_EXEC_UNIT) * HCCL_EXEC_UNIT, HCCL_EXEC_RANGE[1] // HCCL_EXEC_UNIT * HCCL_EXEC_UNIT)
            env["HCCL_EXEC_TIMEOUT"] = str(rounded)
    return env
