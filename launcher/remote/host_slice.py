"""What one remote host is sent of a job: its slice, never the whole job.

The controller renders the plan once (launch.prepare) and writes the whole job dir on its
own disk. A host then gets only what its agent and its ranks read there:

  - ``LOG<rank>/env.sh`` and ``run.sh`` of its own ranks (and ``scheduler/run.sh`` when the
    scheduler runs there), copied from the controller's job dir, not rendered again;
  - the job-wide files its ranks open: ``rank_table.json`` (rank-table mode: HCCL reads the
    whole table on every host) and mpirun's ``hostfile``/``mpirun.sh``/``mpi_rank.sh``;
  - ``agents/host-<index>.json``: job.json's schema with only this host and its ranks (the
    agent reads it with the same strict reader, launcher.job.job_record.load_job).

So the bytes sent to a host and the controller's work for it do not grow with the number of
hosts (FIELD_NOTES "Many hosts": the whole job.json to every host was 10.7 GB at 1,024 hosts).
The exceptions are inherent to their modes: the rank table (and mpirun's hostfile) list every
rank, and the host that runs mpirun starts every rank, so it gets them all.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from hccl.text_file import read_regular_bytes

if TYPE_CHECKING:
    from launcher.job.plan import Plan, Rank

AGENTS_DIR = "agents"
# The controller's own rendered files; a bigger one is not something it wrote.
MAX_JOB_FILE_BYTES = 256 << 20
JOB_WIDE_FILES = {"rank-table": ("rank_table.json",), "mpirun": ("hostfile", "mpirun.sh", "mpi_rank.sh")}


@dataclass(frozen=True)
class PushedFile:
    """A file for the host's copy of the job dir; ``path`` relative to the job dir."""

    path: str
    text: str
    executable: bool = False

    def __post_init__(self) -> None:
        if posixpath.isabs(self.path) or ".." in self.path.split("/"):
            raise ValueError(f"pushed file {self.path}: must stay inside the job directory")


def host_job_file(host_index: int) -> str:
    """The host's job document, relative to the job dir (by index: host names may hold any character)."""
    return f"{AGENTS_DIR}/host-{host_index}.json"


def ranks_by_host(plan: "Plan") -> dict[str, tuple["Rank", ...]]:
    """Every host's ranks in one pass over the plan (plan.ranks_on per host would be O(hosts x ranks))."""
    by_host: dict[str, list["Rank"]] = {entry.host.name: [] for entry in plan.hosts}
    for rank in plan.ranks:
        by_host.setdefault(rank.host, []).append(rank)
    return {name: tuple(ranks) for name, ranks in by_host.items()}


def runs_mpirun(plan: "Plan", host: str) -> bool:
    return plan.spec.mode == "mpirun" and plan.hosts[0].host.name == host


def host_plan(plan: "Plan", host_index: int, ranks: Sequence["Rank"]) -> "Plan":
    """The plan as the agent on the host sees it: that host and its ranks (all of them for mpirun's host)."""
    from launcher.job.plan import HostSlots, Plan

    entry = plan.hosts[host_index]
    host = entry.host.name
    if runs_mpirun(plan, host):
        return plan
    return Plan(spec=plan.spec, ranks=tuple(ranks), hosts=(HostSlots(entry.host, entry.slots),),
                scheduler=plan.scheduler, attempt=plan.attempt, host_slice=host)


def host_job_document(plan: "Plan", host_index: int, ranks: Sequence["Rank"]) -> dict:
    """job.json's schema for the host's slice, marked as such (the agent's plan keeps it a slice)."""
    from launcher.job.job_json import job_document

    sliced = host_plan(plan, host_index, ranks)
    host = sliced.host_slice
    document = job_document(sliced)
    if sliced.host_slice is not None:
        document["host_slice"] = {"host": host, "job_rank_size": plan.rank_size}
        # What only the controller reads: launch-train's argv (for --resume; --hosts alone grows with
        # the host count) and the status it keeps.
        del document["argv"], document["status"]
    return document


def files_for_host(plan: "Plan", host: str, host_index: int, ranks: Sequence["Rank"],
                   *, with_job_document: bool = True) -> list[PushedFile]:
    """The host's part of the controller's job dir (already written there), and its job document last.

    ``ranks``: the host's own (ranks_by_host); the host that runs mpirun gets every rank's files.
    OSError when a file the controller wrote is gone or unreadable.
    """
    job_dir = Path(plan.spec.job_dir)
    own = plan.ranks if runs_mpirun(plan, host) else ranks
    paths = [f"{rank.log_dir}/{name}" for rank in own for name in ("env.sh", "run.sh")]
    if plan.scheduler is not None and plan.scheduler.host == host:
        paths.append(f"{plan.scheduler.log_dir}/run.sh")
    # Job-wide files exist only in the modes that need them everywhere: HCCL reads the whole rank
    # table on every host, and Open MPI's daemons run mpi_rank.sh on every host.
    paths += [name for name in JOB_WIDE_FILES.get(plan.spec.mode, ()) if (job_dir / name).is_file()]
    files = []
    for path in paths:
        local = job_dir / path
        try:
            text = read_regular_bytes(local, MAX_JOB_FILE_BYTES).decode()
        except ValueError as error:  # not a regular file any more, or not text: not what we wrote
            raise OSError(f"{local}: {error}") from None
        files.append(PushedFile(path, text, executable=bool(local.stat().st_mode & 0o111)))
    if with_job_document:
        document = host_job_document(plan, host_index, ranks)
        files.append(PushedFile(host_job_file(host_index), json.dumps(document, indent=1) + "\n"))
    return files
