"""The local backend: every host of the job is this machine; the launcher starts each rank itself.

Also what the SSH agent runs on its own host (``host_group``), so a rank is started the
same way wherever it runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from launcher.backends.base import Backend
from launcher.errors import LaunchError

if TYPE_CHECKING:
    from launcher.job.plan import Plan
    from launcher.run.group import ProcessGroup


class LocalBackend(Backend):
    name = "local"

    def groups(self, plan: "Plan") -> list["ProcessGroup"]:
        remote = [h.host.name for h in plan.hosts if not h.host.local]
        if remote:
            raise LaunchError(f"--hosts {','.join(remote)}: not this machine; use --launcher ssh")
        if plan.spec.mode == "mpirun":
            from launcher.run.mpirun import MpirunGroup

            return [MpirunGroup(plan)]
        return [host_group(plan, entry.host.name) for entry in plan.hosts]


def host_group(plan: "Plan", host: str, *, remote_scheduler: bool = False) -> "ProcessGroup":
    """The group that runs one host's ranks on that host (and the scheduler, when it is there).

    mpirun mode: the first host runs one mpirun for every rank of every host. ``remote_scheduler``:
    the job has hosts elsewhere, so a scheduler on another host is waited for (an agent's view).
    """
    if plan.spec.mode == "mpirun":
        from launcher.run.mpirun import MpirunGroup

        return MpirunGroup(plan)
    from launcher.run.local import SCHEDULER_LISTEN_TIMEOUT_S, LocalGroup

    if remote_scheduler:
        return LocalGroup(plan, host, remote_scheduler_wait_s=SCHEDULER_LISTEN_TIMEOUT_S)
    return LocalGroup(plan, host)
