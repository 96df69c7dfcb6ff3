"""The dynamic-cluster scheduler process: ``python -m launcher.run.ms_scheduler`` with MS_ROLE=MS_SCHED.

The only place the launcher package imports MindSpore, and only in this child process.
Measured with MindSpore 2.10: with MS_ROLE=MS_SCHED, ``mindspore.communication.init()``
runs the scheduler (meta server) and does not return: it waits until every one of
MS_WORKER_NUM workers has registered and later unregistered, then the process exits 0
by itself. If a worker dies, the scheduler would wait for a long heartbeat timeout, so
the launcher stops it together with the workers.
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    if os.environ.get("MS_ROLE") != "MS_SCHED":
        print("launcher.run.ms_scheduler: MS_ROLE must be MS_SCHED", file=sys.stderr)
        return 2
    import mindspore as ms
    from mindspore.communication import init

    ms.set_device("CPU")  # the scheduler does no device work; CPU loads no accelerator plugin
    print(
        f"scheduler: listening on {os.environ.get('MS_SCHED_HOST')}:{os.environ.get('MS_SCHED_PORT')} "
        f"for {os.environ.get('MS_WORKER_NUM')} workers",
        flush=True,
    )
    init()
    return 0


if __name__ == "__main__":
    sys.exit(main())
