"""``launch-train --from-env`` in a pod: this pod's ranks, started and supervised as a local launch.

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
from launcher.errors import LaunchError
from launcher.job.hosts import Host


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


def launch_from_env(ns, options, environ: Optional[Mapping[str, str]] = None) -> int:
    from launcher.launch import launch, prepare, write_job_files
    from launcher.run.local import LocalGroup
    from launcher.job.resolve import resolve_spec

    environ = os.environ if environ is None else environ
    try:
        place = read_pod_place(ns.k8s_kind, environ, sched_port=options.sched_port)
        per_pod = place.ranks_per_pod(options.devices)
        place.rank_size(per_pod)  # checks MS_WORKER_NUM against pods x ranks
    except PodEnvError as exc:
        raise LaunchError(str(exc)) from None
    if options.job_dir is None:
        raise LaunchError("--from-env: give --job-dir (a directory on the pod's job volume)")
    mode = options.mode or ("rank-table" if place.rank_table_file else "dynamic")
    table, table_file = None, None
    if mode == "rank-table":
        if not place.rank_table_file:
            raise LaunchError("--from-env --mode rank-table: RANK_TABLE_FILE is not set (is the rings-config "
                              "ConfigMap mounted?)")
        print(f"launch-train: waiting for the rank table {place.rank_table_file}", file=sys.stderr, flush=True)
        try:
            table = wait_for_rank_table(place.rank_table_file, timeout_s=ns.rank_table_timeout,
                                        topology_check=options.topology_check,
                                        on_wait=lambda why: print(f"launch-train: rank table: {why}",
                                                                  file=sys.stderr, flush=True))
        except RankTableWaitError as exc:
            raise LaunchError(str(exc)) from None
        handle, name = tempfile.mkstemp(prefix="rank_table-", suffix=".json")
        with os.fdopen(handle, "w") as out:
            out.write(rank_table.dumps(table))  # what was validated, not a second read of the mount
        table_file = Path(name)
    try:
        hosts, me = pod_hosts(place, table)
        if table is not None:
            pod_devices = tuple(d.device_id for d in table.servers[me].devices)
            if len(pod_devices) != per_pod:
                raise LaunchError(f"rank table: server {table.servers[me].server_id} has {len(pod_devices)} "
                                  f"devices; this pod runs {per_pod} ranks")
        role = "scheduler" if place.scheduler_only else f"pod-{me}"
        options = dataclasses.replace(
            options, mode=mode, devices=per_pod if table is None else None,
            visible_devices=pod_devices if table is not None else options.visible_devices,
            rank_table=table_file, job_dir=Path(options.job_dir) / role,
            sched_port=place.sched_port if mode == "dynamic" else None)
        spec = resolve_spec(options, hosts=hosts)
    finally:
        if table_file is not None:
            table_file.unlink(missing_ok=True)
    own = hosts[me].name
    if ns.dry_run:
        from launcher.job.dry_run import plan_json, plan_text

        plan, files = prepare(spec)
        sys.stdout.write(plan_json(plan, files) if ns.json else plan_text(plan, files))
        if not ns.json:
            what = ("only the MindSpore scheduler" if place.scheduler_only else
                    f"ranks {', '.join(str(r.rank) for r in plan.ranks_on(own))}"
                    + (" and the MindSpore scheduler" if place.runs_scheduler and mode == "dynamic" else ""))
            sys.stdout.write(f"\n{place.operator} pod {me} of {place.pod_count}: runs {what}\n")
        return 0
    if place.scheduler_only:
        plan, files = prepare(spec)
        if plan.scheduler is None:
            raise LaunchError("--from-env: this is the scheduler pod, but the job has no scheduler (rank-table mode)")
        write_job_files(plan, files)
        script = spec.job_dir / plan.scheduler.log_dir / "run.sh"
        print(f"launch-train: scheduler pod: exec {script}", file=sys.stderr, flush=True)
        os.execvp("bash", ["bash", str(script)])
    runs_scheduler = place.runs_scheduler and mode == "dynamic"

    def groups(plan):
        # The plan has a scheduler (every rank's env names it); unless this pod runs it, another pod does.
        return [LocalGroup(plan, own, run_scheduler=runs_scheduler)]

    result = launch(spec, group_factory=groups, plain_interval=ns.status_interval)
    return result.exit_code
