"""CPU environment that makes MindSpore fast on x86 hosts, applied to this process.

The pure part (which variables, from the CPU flags and the thread count) is the
``cpu_env`` package, shared with the launcher, which renders the same environment into
every CPU rank's env.sh without importing deeplab. Here: applying it to ``os.environ``
before ``import mindspore`` (every deeplab entry point does, first thing) and setting
MindSpore's own thread pool.
"""
from __future__ import annotations

import os
from typing import MutableMapping, Optional

from cpu_env import (  # re-exported: deeplab code and tests use deeplab.cpu_tuning.*
    CPUINFO_PATH,
    THREAD_ENV_VARS,
    available_cores,
    has_avx512,
    parse_cpu_flags,
    read_cpu_flags,
    resolve_threads,
    tuned_cpu_env,
)

__all__ = ["CPUINFO_PATH", "THREAD_ENV_VARS", "apply_to_environ", "available_cores", "has_avx512", "parse_cpu_flags",
           "read_cpu_flags", "resolve_threads", "set_mindspore_threads", "tuned_cpu_env"]


def apply_to_environ(
    threads: Optional[int] = None, environ: Optional[MutableMapping[str, str]] = None
) -> dict[str, str]:
    """Set the tuned variables in ``os.environ`` (or ``environ``) without overriding the user's.

    Must run before ``import mindspore``; returns what it set.
    """
    target = os.environ if environ is None else environ
    added = tuned_cpu_env(threads, environ=target)
    target.update(added)
    return added


def set_mindspore_threads(threads: int) -> bool:
    """Set MindSpore's CPU kernel thread pool size (default 25, far too many on small hosts).

    MindSpore refuses a second call in one process, so this is a no-op returning False
    when the count was already configured; True when it set it.
    """
    if threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads}")
    import mindspore as ms  # late: this module must stay importable without MindSpore
    from mindspore._c_expression import RuntimeConf

    if RuntimeConf.get_instance().is_op_threads_num_configured():
        return False
    ms.device_context.cpu.op_tuning.threads_num(threads)
    return True
