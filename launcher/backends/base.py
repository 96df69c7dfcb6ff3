"""Backend: where the ranks of a job run (this machine, SSH hosts, a Slurm allocation, a pod).

Every backend answers the same three questions, so run_job (launcher/backends/run.py)
is the same for all of them:

  ``discover(options, check=)``  look at the hosts before anything is written or started
                                 (pre-flight, an allocation's nodes, the operator's
                                 variables): the options settled for this place (platform,
                                 mode, ranks per host) and the hosts as the resolver needs them
  ``groups(plan)``               the process groups that run the plan there (launcher/run/group.py)
  ``describe(plan)``             what a dry run adds to the plan: how each host is reached

and, where it applies, ``submit(options)`` (a batch script or manifests instead of a start) or
its own ``launch(spec, ...)`` (a pod that only runs the scheduler). ``close()`` gives back
whatever discover held (a probe step). Adding a place is one file here and one line in
``select_backend`` (launcher/backends/__init__.py).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from launcher.errors import LaunchError

if TYPE_CHECKING:  # the per-host agent imports the local backend: options and hosts load only where used
    from launcher.job.hosts import PreparedHosts
    from launcher.job.options import LaunchOptions
    from launcher.job.plan import Plan
    from launcher.job.spec import JobSpec
    from launcher.launch import JobResult
    from launcher.run.group import ProcessGroup


@dataclass(frozen=True)
class Discovered:
    """What discover found: the options settled for the place, and its hosts (None: options.hosts, this machine)."""

    options: LaunchOptions
    hosts: Optional[PreparedHosts] = None

    def resolver_inputs(self) -> dict[str, Any]:
        """Keyword arguments of launcher.job.resolve.resolve_spec."""
        if self.hosts is None:
            return {}
        return {"hosts": self.hosts.hosts, "hccn_texts": self.hosts.hccn_texts,
                "scheduler_port": self.hosts.scheduler_port, "gpu_ids": self.hosts.gpu_ids}


def next_attempt_spec(settled: LaunchOptions, spec: "JobSpec", attempt: int,
                      prepare: "Callable[[LaunchOptions], PreparedHosts]") -> "JobSpec":
    """The spec of attempt ``attempt + 1`` of the job ``spec`` on the hosts ``prepare`` finds now (a backend's
    replan after it changed its hosts): same job id and dir, and the job's first rank count kept, so the
    trainer keeps the global batch on fewer ranks."""
    import dataclasses

    from launcher.job.resolve import resolve_spec

    options = dataclasses.replace(settled, job_id=spec.job_id, job_dir=spec.job_dir, resume=True,
                                  first_attempt=attempt + 1)
    new_spec = resolve_spec(options, **Discovered(options, prepare(options)).resolver_inputs())
    return dataclasses.replace(new_spec, planned_rank_size=spec.planned_rank_size or spec.rank_size)


class Backend(ABC):
    """One place where ranks run; see the module docstring."""

    name: str = "?"

    def discover(self, options: LaunchOptions, *, check: bool = True) -> Discovered:
        """Default: the hosts are what the options say (this machine); nothing to look at."""
        return Discovered(options)

    @abstractmethod
    def groups(self, plan: "Plan") -> Sequence["ProcessGroup"]:
        """The process groups that run ``plan`` here (one per host, or one for the whole job)."""

    def describe(self, plan: "Plan") -> str:
        """What --dry-run prints after the plan: how each host is reached, what runs there."""
        return ""

    def launch(self, spec: "JobSpec", **supervision: Any) -> "JobResult":
        """Run the job to its end under the supervisor (launcher.launch.launch) with this backend's groups."""
        from launcher.launch import launch

        return launch(spec, group_factory=self.groups, replan=self.replan, host_changes=self.host_changes,
                      **supervision)

    def replan(self, spec: "JobSpec", lost: "dict[str, str]", attempt: int) -> Optional["JobSpec"]:
        """The next attempt's spec when hosts were lost (host name -> why); None: restart on the same hosts.
        LaunchError when the job cannot go on without them. Default: this place has no other hosts."""
        return None

    def host_changes(self) -> dict:
        """What job.json says about hosts lost and spares taken (status.excluded_hosts, status.spare_hosts)."""
        return {}

    def submit(self, options: LaunchOptions) -> int:
        raise LaunchError(f"--submit: the {self.name} backend starts jobs, it does not submit them")

    def close(self) -> None:
        """Give back what discover held (default: nothing)."""
