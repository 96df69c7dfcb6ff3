"""The k8s-pod backend (``launch-train --from-env``): this pod's ranks, supervised as a local launch.

1. Read what the operator set (launcher/cluster/pod_env.py): this pod's index, the number of
   worker pods, the scheduler's address, the devices it was given.
2. Rank-table mode: wait (bounded, --rank-table-timeout) for the mounted rank table to say
   "completed", validate it with hccl/ (launcher/cluster/rank_table_wait.py).
3. Plan the WHOLE job (every pod a host, in pod order) so that every rank's RANK_ID,
   RANK_SIZE, MS_NODE_ID and MS_WORKER_NUM are the job's, then start only this pod's ranks
   with the local launcher: job.json, LOG<rank>/, supervision, fail-fast, restarts.
   The pod's job dir is <job-dir>/pod-<index> (pods may share <job-dir> on one volume).
4. The Scheduler pod of an MSJob/AscendJob runs only the MindSpore scheduler (exec, so the
   kubelet's signals reach it); on Volcano the first worker pod runs it beside its ranks.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Mapping, Optional

from launcher.cluster.pod_env import PodEnvError, PodPlace, read_pod_place
from launcher.cluster.pod_ranks import pod_server
from launcher.cluster.rank_table_wait import RankTableWaitError, wait_for_rank_table
from hccl import rank_table
from launcher.backends.base import Backend, Discovered
from launcher.errors import LaunchError
from launcher.job.hosts import Host, PreparedHosts


def pod_hosts(place: PodPlace, table=None) -> tuple[tuple[Host, ...], int]:
    """One host per worker pod in rank order, and this pod's index among them.

    Only what other pods must reach needs a real address: the first pod's (the scheduler on
    Volcano) or MS_SCHED_HOST (MSJob/AscendJob); with a rank table each server's id.
    """
    if table is not None:
        me = list(table.servers).index(pod_server(place, table))
        addresses = [s.server_id for s in table.servers]
    else:
        me = place.pod_index
        if place.hosts:
            addresses = list(place.hosts)
        else:
            addresses = [f"pod{i}" for i in range(place.pod_count)]
            if place.sched_host:
                addresses[0] = place.sched_host  # MS_SCHED_HOST: what every rank's env must say
    # A pod is "local" to its own launcher (its cores are probed and bound), except the first worker pod
    # of an MSJob/AscendJob: its address stands for the Scheduler pod, whose port is not this pod's to check.
    sched_elsewhere = place.operator in ("msjob", "ascendjob") and table is None
    try:
        hosts = tuple(Host(name=f"pod{i}", address=address, local=i == me and not (i == 0 and sched_elsewhere))
                      for i, address in enumerate(addresses))
    except ValueError as exc:
        raise LaunchError(f"--from-env: {exc}") from None
    return hosts, me


class K8sPodBackend(Backend):
    """``launch-train --from-env`` in one pod of a Volcano Job, MSJob or AscendJob."""

    name = "k8s-pod"

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.place: Optional[PodPlace] = None
        self.me = 0
        self._table_file: Optional[Path] = None

    def discover(self, options, *, check: bool = True) -> Discovered:
        from launcher.job.platforms import default_mode

        try:
            place = read_pod_place(options.k8s_kind, self.environ, sched_port=options.sched_port)
            per_pod = place.ranks_per_pod(options.devices)
            place.rank_size(per_pod)  # checks MS_WORKER_NUM against pods x ranks
        except PodEnvError as exc:
            raise LaunchError(str(exc)) from None
        if options.job_dir is None:
            raise LaunchError("--from-env: give --job-dir (a directory on the pod's job volume)")
        # Pods cannot run one mpirun across each other; a rank table is there when the operator mounted one.
        mode = options.mode or default_mode(options.platform or ("Ascend" if place.rank_table_file else "CPU"),
                                            mpirun_spans_hosts=False, rank_table=bool(place.rank_table_file))
        table = None
        if mode == "rank-table":
            table = self._wait_for_table(place, options)
        hosts, me = pod_hosts(place, table)
        pod_devices = None
        if table is not None:
            pod_devices = tuple(d.device_id for d in table.servers[me].devices)
            if len(pod_devices) != per_pod:
                raise LaunchError(f"rank table: server {table.servers[me].server_id} has {len(pod_devices)} "
                                  f"devices; this pod runs {per_pod} ranks")
        self.place, self.me = place, me
        role = "scheduler" if place.scheduler_only else f"pod-{me}"
        settled = dataclasses.replace(
            options, mode=mode, devices=per_pod if table is None else None,
            visible_devices=pod_devices if table is not None else options.visible_devices,
            rank_table=self._table_file, job_dir=Path(options.job_dir) / role,
            sched_port=place.sched_port if mode == "dynamic" else None)
        return Discovered(settled, PreparedHosts(hosts))

    def _wait_for_table(self, place: PodPlace, options):
        if not place.rank_table_file:
            raise LaunchError("--from-env --mode rank-table: RANK_TABLE_FILE is not set (is the rings-config "
                              "ConfigMap mounted?)")
        print(f"launch-train: waiting for the rank table {place.rank_table_file}", file=sys.stderr, flush=True)
        try:
            table = wait_for_rank_table(place.rank_table_file, timeout_s=options.rank_table_timeout_s,
                                        topology_check=options.topology_check,
                                        on_wait=lambda why: print(f"launch-train: rank table: {why}",
                                                                  file=sys.stderr, flush=True))
        except RankTableWaitError as exc:
            raise LaunchError(str(exc)) from None
        # The resolver reads the table from a file: a private copy of the one that was validated
        # (the mounted one may be rewritten meanwhile); removed by close().
        handle, name = tempfile.mkstemp(prefix="rank_table-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            out.write(rank_table.dumps(table))  # what was validated, not a second read of the mount
        self._table_file = Path(name)
        return table

    def close(self) -> None:
        if self._table_file is not None:
            self._table_file.unlink(missing_ok=True)
            self._table_file = None

    @property
    def _own(self) -> str:
        return f"pod{self.me}"

    def describe(self, plan) -> str:
        place = self.place
        assert place is not None
        mode = plan.spec.mode
        what = ("only the MindSpore scheduler" if place.scheduler_only else
                f"ranks {', '.join(str(r.rank) for r in plan.ranks_on(self._own))}"
                + (" and the MindSpore scheduler" if place.runs_scheduler and mode == "dynamic" else ""))
        return f"\n{place.operator} pod {self.me} of {place.pod_count}: runs {what}\n"

    def groups(self, plan):
        from launcher.run.local import LocalGroup

        assert self.place is not None
        # The plan has a scheduler (every rank's env names it); unless this pod runs it, another pod does.
        runs_scheduler = self.place.runs_scheduler and plan.spec.mode == "dynamic"
        return [LocalGroup(plan, self._own, run_scheduler=runs_scheduler)]

    def launch(self, spec, **supervision):
        """The Scheduler pod of an MSJob/AscendJob only execs the scheduler (the kubelet's signals reach it)."""
        assert self.place is not None
        if not self.place.scheduler_only:
            return super().launch(spec, **supervision)
        from launcher.launch import prepare, write_job_files

        plan, files = prepare(spec)
        if plan.scheduler is None:
            raise LaunchError("--from-env: this is the scheduler pod, but the job has no scheduler (rank-table mode)")
        write_job_files(plan, files)
        script = spec.job_dir / plan.scheduler.log_dir / "run.sh"
        print(f"launch-train: scheduler pod: exec {script}", file=sys.stderr, flush=True)
        os.execvp("bash", ["bash", str(script)])
