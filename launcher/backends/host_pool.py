"""The hosts a job runs on, its spares, and what it lost: one rule for every backend that has spares.

A host that is lost keeps its rank position: a spare takes its place (same rank count, the
rank table / hostfile / scheduler rebuilt by planning again). With no spare left the job goes
on with the hosts that remain only while at least ``min_hosts`` remain (--min-hosts); without
--min-hosts a lost host with no spare ends the job. job.json records every host excluded
(status.excluded_hosts) and every spare taken (status.spare_hosts).
"""
from __future__ import annotations

from typing import Generic, Optional, Sequence, TypeVar

from launcher.errors import LaunchError

H = TypeVar("H")


class HostPool(Generic[H]):
    """``planned``: the job's hosts in rank order; ``spares``: in the order they are taken. ``name(h)`` names one."""

    def __init__(self, planned: Sequence[H], spares: Sequence[H], name, min_hosts: Optional[int] = None) -> None:
        self.planned = list(planned)
        self.spares = list(spares)
        self.name = name
        self.min_hosts = min_hosts
        if min_hosts is not None and min_hosts > len(self.planned):
            raise LaunchError(f"--min-hosts {min_hosts}: the job has only {len(self.planned)} host(s)")
        self.excluded: list[dict] = []
        self.taken: list[dict] = []

    def replace(self, lost: "dict[str, str]", attempt: int, at: str) -> bool:
        """Take every lost planned host (name -> why) out of the plan: a spare in its place, or none
        (--min-hosts). False when none of them is planned; LaunchError when the job cannot go on."""
        gone = [host for host in self.planned if self.name(host) in lost]
        if not gone:
            return False
        hosts: list[Optional[H]] = list(self.planned)
        for index, host in enumerate(hosts):
            if host is None or self.name(host) not in lost:
                continue
            name = self.name(host)
            self.excluded.append({"host": name, "reason": lost[name], "at": at, "attempt": attempt})
            if self.spares:
                spare = self.spares.pop(0)
                hosts[index] = spare
                self.taken.append({"host": self.name(spare), "replaces": name, "at": at, "attempt": attempt + 1,
                                   "reason": f"in place of {name}"})
            else:
                hosts[index] = None
        left = [host for host in hosts if host is not None]
        if len(left) < len(self.planned) and (self.min_hosts is None or len(left) < self.min_hosts):
            names = ", ".join(self.name(host) for host in gone)
            floor = (f"--min-hosts {self.min_hosts} needs more" if self.min_hosts is not None
                     else "give --spare-hosts, or --min-hosts to go on with fewer hosts")
            raise LaunchError(f"lost {names}; no spare host left and {len(left)} host(s) remain ({floor})")
        self.planned = left
        return True

    def changes(self) -> dict:
        """job.json status: the hosts this job lost, and the spares that took their place."""
        return {"excluded_hosts": list(self.excluded), "spare_hosts": list(self.taken)}
