"""launch-train: start a distributed DeepLabV3 (or any MindSpore) training job and supervise it.

Usage
    launch-train [options] [-- TRAINING ARGS]

Everything after ``--`` is passed unchanged to every rank's program, e.g.
    launch-train --platform CPU --devices 2 -- --config tiny_synthetic --data-root DIR --train-steps 20

What it does
    1. Plans the job: hosts x devices -> ranks (host-major), each with its device, global
       rank, environment, command line, working directory LOG<rank> and CPU cores.
    2. Renders, from the Jinja2 templates in job_templates/ (or --templates DIR), each
       rank's LOG<rank>/env.sh and LOG<rank>/run.sh, plus the mpirun hostfile, the
       scheduler's script, the rank table - and writes job.json before anything starts.
    3. Starts every rank (each in its own session), watches all of them, shows a live
       status line per rank (step, loss, s/step from `epoch: E step: S, loss is L` lines)
       and prints the output of the --tee ranks prefixed [host:rank].
    4. When any rank exits non-zero or is killed, stops all others (SIGTERM, 2.5 s grace,
       SIGKILL of every process tree), names the failed rank, its exit code or signal,
       its log and the log's last lines, and exits with that rank's status.

Where it runs
    --devices N               devices (ranks) per host; CPU default 1, GPU/Ascend default all found
    --visible-devices LIST    exact device ids per host, e.g. 0,1,4-7 (GPU: nvidia-smi ids;
                              Ascend: ids in hccn.conf or the rank table)
    --hosts H1,H2,...         hosts, in rank order (default: this machine); names other than
                              this machine's (localhost, 127.0.0.1, its hostname) are reached
                              over SSH (below).

Several hosts (SSH; see launcher/remote/hosts.py and the README's multi-host section)
    --hosts [user@]host[:port],...  or  --hostfile FILE (one host a line, optional slots=N, # comments)
    --ssh-config FILE         OpenSSH client config (default ~/.ssh/config); --ssh-key FILE;
                              --ssh-timeout S (default 10); --ssh-known-hosts FILE
    --ssh-accept-unknown-host-keys
                              accept host keys missing from known_hosts (default: refuse)
    --remote-python PATH      interpreter on the hosts (default: this one's path)
    --master-addr ADDR        scheduler address the other hosts reach (dynamic mode)
    --heartbeat-timeout S     a host's agent stops its ranks when the controller is silent this long
    Before anything starts, every host is checked in parallel (SSH; python importing launcher
    and the --module's package, deeplab by default, nothing more for --entry; job dir writable;
    devices; hccn.conf on Ascend; the scheduler port on the first host); any failure prints one
    table and exits 2. The job dir is the same path on every host;
    on Ascend --hccn-conf may contain {host} (each host's own file) and one rank table is merged
    from all hosts. A rank failing on any host, Ctrl-C, or a lost SSH connection stops every rank
    on every host.
Inside a Slurm allocation (see launcher/cluster/slurm_launch.py and the README's "Clusters")
    --launcher slurm|ssh|local  who starts the ranks; default slurm when SLURM_JOB_ID is set, srun
                              exists and no --hosts/--hostfile is given, else ssh/local by --hosts. Under slurm the hosts are the
                              allocation's nodes (--hosts is refused); ranks per node --devices, else
                              SLURM_NTASKS_PER_NODE, else the nodes' Gres. One task per node first checks
                              the job dir is visible there (shared file system; else exit 2), and reads
                              hccn.conf in rank-table mode ({host} = node name); then the ranks run as ONE
                              `srun --kill-on-bad-exit=1` step (each task runs LOG<SLURM_PROCID>/run.sh),
                              the scheduler as a one-task step on the first node; a failure, Ctrl-C and the
                              end cancel the steps. srun's own output: <job-dir>/srun.log.

Submitting to Slurm or Kubernetes (launcher/cluster/submit_cli.py)
    --submit slurm [--nodes N] [--partition P] [--time T] [--account A] [--slurm-arg ARG ...] [--wait]
                              write <job-dir>/submit.sbatch (job_templates/slurm/submit.sbatch.j2), which runs
                              these same options with --launcher slurm inside the allocation; sbatch it and
                              print the Slurm job id and the job dir. --wait: wait, exit with the job's
                              status. --dry-run: print the script, submit nothing.
    --submit k8s --k8s-kind volcano|msjob|ascendjob --image IMG [--nodes N] [--namespace NS]
                 [--k8s-set PATH=VALUE ...] [--apply]
                              write <job-dir>/k8s/*.yaml (job_templates/k8s/; AscendJob rank-table jobs also
                              the rings-config-<job> ConfigMap); every pod runs launch-train --from-env with
                              these options. --k8s-set: pod.PATH (every pod template), container.PATH (every
                              training container) or PATH from the job's root; values are YAML. --apply:
                              kubectl apply -f <job-dir>/k8s/ when kubectl has a cluster, else the command
                              is printed. --dry-run: print the manifests, write nothing.
    --from-env [--k8s-kind KIND] [--rank-table-timeout S]
                              in a pod: read the operator's variables (VC_TASK_INDEX, VC_WORKER_HOSTS; MS_ROLE,
                              MS_SCHED_HOST, MS_SCHED_PORT, MS_WORKER_NUM, MS_NODE_ID / MS_NODE_RANK,
                              MS_LOCAL_WORKER, ASCEND_VISIBLE_DEVICES; RANK_TABLE_FILE), wait while the
                              mounted rank table says "initializing" (default 600 s), and start this pod's
                              ranks as a local launch in <job-dir>/pod-<index>/.

    --platform Ascend|GPU|CPU default: Ascend when npu-smi or /etc/hccn.conf exists, GPU when
                              nvidia-smi lists GPUs, else CPU
    --mode rank-table|mpirun|dynamic
                              start mode; default Ascend -> rank-table, GPU -> mpirun, CPU -> dynamic
    --rank-table FILE         Ascend rank table to use (copied to <job-dir>/rank_table.json);
                              default: built with hccl/ from --hccn-conf
    --hccn-conf FILE          device IP list for the rank table (default /etc/hccn.conf)
    --sched-port PORT         dynamic mode scheduler port (default: a free port); checked free before start
    --no-topology-check       accept device sets HCCL does not support (1, 2, 4 or 8 devices per server)

What each rank runs
    --module MOD              python -m MOD (default deeplab.train)
    --entry SCRIPT.py         python SCRIPT.py instead
    --env KEY=VALUE           extra environment for every rank and the scheduler (repeatable; wins
                              over everything the launcher sets)
    --bind-cores / --no-bind-cores
                              bind each rank to its share of this host's cores (default on; cores are
                              split evenly between the host's ranks; CPU thread counts follow)
    --templates DIR           your own templates (same file names as job_templates/: env.sh.j2,
                              run.sh.j2, hostfile.j2, scheduler.sh.j2, mpirun.sh.j2, mpi_rank.sh.j2);
                              files missing there come from the built-in ones

Supervision
    --job-dir DIR             default ./jobs/<job-id>, job id = UTC time + random suffix; must not
                              exist or be empty
    --max-restarts N          restart the whole job up to N times after a failure (default 0). The
                              program's arguments are never changed: every rank is told the attempt
                              in LAUNCH_TRAIN_RESTART_COUNT (deeplab.train then resumes by itself from
                              the newest checkpoint in LAUNCH_TRAIN_CKPT_DIR); each restart appends to
                              the same log.txt after a "==== launch-train: restart N: <command>" line
    --tee RANKS               ranks whose output is also printed here, prefixed [host:rank], without
                              MindSpore's own [INFO]/[WARNING] records (log.txt keeps those)
                              (e.g. 0,1 or 0-3, all, none; default 0)
    --status-interval S       seconds between status blocks when stderr is not a terminal (default 30)
    --hang-timeout S          hang watchdog: a rank whose log shows no new training step for S seconds
                              is hung (default 1800; 0 turns it off). Then every rank's Python stack
                              (py-spy; native frames too where they can be read) goes to
                              LOG<rank>/stack.txt, the ranks furthest behind are named with what they
                              wait in, job.json records it (status.hang), and the job is stopped
                              (exit 124) or restarted under --max-restarts. MindSpore's and HCCL's own
                              timeouts (MS_NODE_TIMEOUT, MS_RECEIVE_MSG_TIMEOUT, MS_TOPO_TIMEOUT,
                              HCCL_EXEC_TIMEOUT, HCCL_CONNECT_TIMEOUT) are set to fire only after it;
                              --env overrides them.
    --first-step-timeout S    time a rank may take until its first step: graph compile, data start-up
                              (default 3600; 0: off)

Looking at a running job
    --status JOB_DIR          the job's state and every rank: host, last step, seconds since its last
                              log line, its processes on this machine and what state they are in
    --stack JOB_DIR           dump the stack of every rank running on this machine now into
                              LOG<rank>/stack.txt (py-spy) and print where each one is; a rank's
                              processes are those the job started, owned by the user who ran it

Looking before starting
    --dry-run                 print the whole plan (every rank's host, device, cores, command and
                              environment, the rank table, every rendered file); start and write nothing
    --dry-run --json          the same as JSON: job.json as it would be written, plus "files"

Start modes
    dynamic     one scheduler (MS_ROLE=MS_SCHED, `python -m launcher.run.ms_scheduler`, scheduler/)
                and one worker per device with MS_ROLE=MS_WORKER, MS_SCHED_HOST, MS_SCHED_PORT,
                MS_WORKER_NUM, MS_NODE_ID, RANK_ID, RANK_SIZE, DEVICE_ID.
    rank-table  one process per device with RANK_TABLE_FILE, DEVICE_ID, RANK_ID (from the
                table), RANK_SIZE, SERVER_ID.
    mpirun      one `mpirun -n N --hostfile <job>/hostfile` (mpirun.sh, output in mpirun.log); every
                MPI process runs mpi_rank.sh -> LOG<rank>/run.sh for its OMPI_COMM_WORLD_RANK.
    Every rank also gets (launcher/job/rank_env.py; the same for --entry and --module):
      DEVICE_TARGET               Ascend | GPU | CPU, the rank's platform (deeplab.train's default
                                  --device-target), next to DEVICE_ID (the rank's device on its host)
      RANK_ID, RANK_SIZE          global rank and size
      LAUNCH_TRAIN_JOB_DIR        the job dir (also how the launcher finds every process of the job)
      LAUNCH_TRAIN_RESTART_COUNT  0 on the first attempt, N on the N-th restart
      LAUNCH_TRAIN_MAX_RESTARTS   --max-restarts
      LAUNCH_TRAIN_CKPT_DIR       <job-dir>/LOG0/ckpt, the same for every rank (deeplab.train's
                                  default --ckpt-dir), so every rank resumes from the same files
      PYTHONUNBUFFERED=1
    GPU ranks get CUDA_VISIBLE_DEVICES=<devices> and DEVICE_ID=<local index>; CPU ranks get the
    cpu_env package's environment (ONEDNN_MAX_CPU_ISA=AVX2 on AVX-512 CPUs, OMP/BLAS threads =
    the rank's cores).

Job directory
    job.json            plan + status (schema 1), written first, rewritten at the end
    LOG<rank>/env.sh    the rank's environment;  LOG<rank>/run.sh  `bash LOG3/run.sh` reruns rank 3
    LOG<rank>/log.txt   the rank's stdout+stderr (appended to on restarts)
    scheduler/run.sh, scheduler/log.txt          dynamic mode
    rank_table.json                              rank-table mode
    hostfile, mpirun.sh, mpi_rank.sh, mpirun.log, LOG<rank>/exit_status      mpirun mode
    srun.sh, slurm_rank.sh, srun.log, scheduler/srun.log, LOG<rank>/exit_status   --launcher slurm
    submit.sbatch, slurm-<id>.out                 --submit slurm (then everything above, from inside the job)
    k8s/*.yaml                                    --submit k8s;  pod-<index>/ (a whole job dir)  --from-env
    LOG0/ckpt/          LAUNCH_TRAIN_CKPT_DIR: deeplab.train's checkpoints and config.yaml
                        (rank 0's; every rank's with --set save_ckpt_all_ranks=true)
    The training program may write more files in its LOG<rank>/ (its working directory).

From Python
    options = LaunchOptions(platform="CPU", devices=2, args=(...))      (launcher.job.options)
    result = launch(resolve_spec(options))       (launcher.job.resolve, launcher.launch)
    result.exit_code, result.first_failure (RankFailure), result.check() raises JobFailed
    Hosts other than this machine: RemoteHosts(...).prepare(options) -> hosts for resolve_spec,
    and launch(..., group_factory=remote.rank_groups) (launcher.remote.hosts).

Exit status
    0        every rank exited 0
    N        the first failing rank's exit code; 128+S when it was killed by signal S
    124      the hang watchdog stopped the job (see --hang-timeout)
    130/143/129  the launcher got SIGINT (Ctrl-C) / SIGTERM / SIGHUP; every rank was stopped
    2        bad input (one line on stderr, nothing started, no job directory written):
             unknown platform or mode, devices not available, invalid topology, port in use,
             missing entry script, job dir not empty, a template with an undefined variable,
             a bad hccn.conf or rank table; --launcher slurm outside an allocation or with a job
             dir some node cannot see; an operator variable missing or contradicting another;
             a mounted rank table still "initializing" after --rank-table-timeout
    --submit slurm --wait exits with the Slurm job's status
    1        the scheduler failed while ranks were running
"""
from __future__ import annotations

import os
import signal
import sys

# Ctrl-C in the first moments (imports, argument checks, pre-flight) must not print a
# traceback or leave half a job dir: as the program (not when a test imports this), a
# SIGINT is only noted from the first line on, and main() stops at its next checkpoint.
_EARLY_SIGNALS: list[int] = []
if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "launch-train":
    signal.signal(signal.SIGINT, lambda signum, frame: _EARLY_SIGNALS.append(signum))

import argparse  # noqa: E402 - after the handler, on purpose
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, NoReturn, Optional, Sequence  # noqa: E402

from launcher.errors import LaunchError  # noqa: E402
from launcher.job.hang_policy import DEFAULT_FIRST_STEP_TIMEOUT_S, DEFAULT_HANG_TIMEOUT_S  # noqa: E402
from launcher.job.platforms import MODES, parse_device_list  # noqa: E402
from launcher.job.options import MAX_RESTARTS  # noqa: E402
from launcher.job.strict_numbers import whole_number_arg  # noqa: E402

if TYPE_CHECKING:
    from launcher.job.options import LaunchOptions

PROG = "launch-train"
EARLY_EXIT_MESSAGE = f"{PROG}: interrupted before the job started; nothing was written"


class _EarlyInterrupt(Exception):
    """A SIGINT noted before the job's own handlers took over."""


def _checkpoint() -> None:
    if _EARLY_SIGNALS:
        raise _EarlyInterrupt()


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line (the rule for every bad input), still exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog=PROG,
        usage=f"{PROG} [options] [-- TRAINING ARGS]",
        description=__doc__.split("\n\nWhere it runs")[0],
        epilog="The full manual: python -m pydoc launcher.cli",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = p.add_argument_group("where it runs")
    count = where.add_mutually_exclusive_group()
    count.add_argument("--devices", type=whole_number_arg("--devices"), metavar="N", help="devices (ranks) per host")
    where.add_argument("--visible-devices", metavar="LIST", help="device ids per host, e.g. 0,1,4-7")
    where.add_argument("--hosts", metavar="H1,H2", help="hosts in rank order (default: this machine)")
    where.add_argument("--hostfile", type=Path, metavar="FILE",
                       help="hosts, one per line: [user@]host[:port] [slots=N]; # comments")
    where.add_argument("--platform", metavar="Ascend|GPU|CPU", help="default: detected")
    where.add_argument("--mode", choices=MODES, help="start mode (default by platform)")
    where.add_argument("--rank-table", type=Path, metavar="FILE", help="Ascend rank table to use")
    where.add_argument("--hccn-conf", type=Path, default=Path("/etc/hccn.conf"), metavar="FILE")
    where.add_argument("--sched-port", type=whole_number_arg("--sched-port"), metavar="PORT",
                       help="dynamic-mode scheduler port")
    where.add_argument("--no-topology-check", dest="topology_check", action="store_false",
                       help="accept rank tables with device sets HCCL does not support")
    where.add_argument("--launcher", choices=("slurm", "ssh", "local"),
                       help="who starts the ranks (default: slurm inside an allocation, else ssh/local by --hosts)")
    what = p.add_argument_group("what each rank runs")
    entry = what.add_mutually_exclusive_group()
    entry.add_argument("--entry", type=Path, metavar="SCRIPT.py", help="run python SCRIPT.py")
    entry.add_argument("--module", metavar="MOD", help="run python -m MOD (default deeplab.train)")
    what.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="repeatable")
    what.add_argument("--bind-cores", action=argparse.BooleanOptionalAction, default=True)
    what.add_argument("--templates", type=Path, metavar="DIR", help="your own template directory")
    sup = p.add_argument_group("supervision")
    sup.add_argument("--job-dir", type=Path, metavar="DIR", help="default ./jobs/<job-id>")
    sup.add_argument("--max-restarts", type=whole_number_arg("--max-restarts", 0, MAX_RESTARTS), default=0,
                     metavar="N")
    sup.add_argument("--tee", default="0", metavar="RANKS", help="ranks printed here (default 0)")
    sup.add_argument("--status-interval", type=float, default=30.0, metavar="S")
    sup.add_argument("--hang-timeout", type=float, default=DEFAULT_HANG_TIMEOUT_S, metavar="S",
                     help="a rank with no new training step for S seconds is hung (0: off)")
    sup.add_argument("--first-step-timeout", type=float, default=DEFAULT_FIRST_STEP_TIMEOUT_S, metavar="S",
                     help="time allowed until a rank's first step (compile, data start-up; 0: off)")
    look_running = p.add_argument_group("looking at a running job")
    looking = look_running.add_mutually_exclusive_group()
    looking.add_argument("--status", type=Path, metavar="JOB_DIR", help="show the ranks of a (running) job and exit")
    looking.add_argument("--stack", type=Path, metavar="JOB_DIR",
                         help="dump every local rank's stack into LOG<rank>/stack.txt and exit")
    look = p.add_argument_group("looking before starting")
    look.add_argument("--dry-run", action="store_true", help="print the plan, start nothing")
    look.add_argument("--json", action="store_true", help="with --dry-run: print it as JSON")
    return p


def split_training_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Launcher options before the first ``--``, training args (unchanged) after it."""
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def options_from_args(ns: argparse.Namespace, training_args: Sequence[str]) -> "LaunchOptions":
    from launcher.cluster.submit_cli import SUBMITTED_FILES
    from launcher.job.options import LaunchOptions, parse_env_assignment

    visible = parse_device_list(ns.visible_devices) if ns.visible_devices is not None else None
    return LaunchOptions(
        args=tuple(training_args),
        devices=ns.devices,
        visible_devices=visible,
        hosts=ns.hosts,
        hostfile=ns.hostfile,
        platform=ns.platform,
        mode=ns.mode,
        rank_table=ns.rank_table,
        hccn_conf=ns.hccn_conf,
        sched_port=ns.sched_port,
        master_addr=ns.master_addr,
        entry=ns.entry,
        module=ns.module,
        job_dir=ns.job_dir,
        env=tuple(parse_env_assignment(item) for item in ns.env),
        bind_cores=ns.bind_cores,
        max_restarts=ns.max_restarts,
        templates=ns.templates,
        tee=ns.tee,
        topology_check=ns.topology_check,
        hang_timeout_s=ns.hang_timeout,
        first_step_timeout_s=ns.first_step_timeout,
        job_id=getattr(ns, "job_id", None),
        prepared_files=SUBMITTED_FILES if getattr(ns, "from_submit", False) else (),
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        return _main(argv)
    except (KeyboardInterrupt, _EarlyInterrupt):
        # Ctrl-C before the job's own handlers were in place: nothing was started or written.
        print(EARLY_EXIT_MESSAGE, file=sys.stderr)
        return 130


def _main(argv: Optional[Sequence[str]] = None) -> int:
    from launcher.cluster import submit_cli
    from launcher.remote import hosts as remote_hosts

    own, training_args = split_training_args(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    remote_hosts.add_arguments(parser)
    submit_cli.add_arguments(parser)
    ns = parser.parse_args(own)
    _checkpoint()
    if ns.json and not ns.dry_run:
        print(f"{PROG}: error: --json: only with --dry-run", file=sys.stderr)
        return 2
    if not (0 < ns.status_interval <= 86400):  # NaN fails this too
        print(f"{PROG}: error: --status-interval {ns.status_interval}: must be a number of seconds in (0, 86400]",
              file=sys.stderr)
        return 2
    if ns.status is not None or ns.stack is not None:
        from launcher.job_view import show_stacks, show_status

        try:
            if ns.status is not None:
                return show_status(ns.status, sys.stdout)
            return show_stacks(ns.stack, sys.stdout)
        except LaunchError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    try:
        if ns.submit == "slurm":
            return submit_cli.submit_slurm(ns, own, training_args)
        if ns.submit == "k8s":
            return submit_cli.submit_k8s(ns, own, training_args)
        if ns.from_env:
            from launcher.cluster.pod_launch import launch_from_env

            return launch_from_env(ns, options_from_args(ns, training_args))
        return _run(ns, training_args)
    except LaunchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


def _run(ns: argparse.Namespace, training_args: Sequence[str]) -> int:
    import dataclasses

    from launcher.cluster.slurm_launch import SlurmHosts, chosen_launcher
    from launcher.job.hosts import host_entries
    from launcher.job.resolve import resolve_spec, settle_platform
    from launcher.launch import local_groups
    from launcher.remote.hosts import RemoteHosts

    if chosen_launcher(ns.launcher, hosts_given=bool(ns.hosts or ns.hostfile)) == "slurm":
        slurm = SlurmHosts.from_environment()
        # One task per node looks at every node while this process imports and plans (the flags it
        # needs have the same names as the options).
        slurm.start_probe(ns, check=not ns.dry_run)
        try:
            options = slurm.settle(options_from_args(ns, training_args))
            found = slurm.prepare(options, check=not ns.dry_run)
        finally:
            slurm.abandon_probe()  # a no-op once prepare has read it
        spec = resolve_spec(options, hosts=found.hosts, hccn_texts=found.hccn_texts,
                            scheduler_port=found.scheduler_port, gpu_ids=found.gpu_ids)
        return _start(ns, spec, slurm.rank_groups, slurm.dry_run_text)

    options = options_from_args(ns, training_args)
    _checkpoint()
    try:
        entries = host_entries(options.hosts, options.hostfile)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None
    remote = RemoteHosts.from_args(ns, entries)  # None when every host is this machine
    if remote is None:
        return _start(ns, resolve_spec(options), local_groups, None)
    if ns.launcher == "local":
        raise LaunchError("--launcher local: --hosts/--hostfile name other machines; use --launcher ssh")
    settled = dataclasses.replace(settle_platform(options), python=ns.remote_python)
    if options.platform is None and not entries[0].local:
        print(f"{PROG}: warning: --platform not given: {settled.platform} detected on this machine, not on "
              "the hosts; give --platform if they differ", file=sys.stderr)
    # Pre-flight every remote host (not for dry runs): what it finds completes the job.
    found = remote.prepare(settled, check=not ns.dry_run)
    _checkpoint()
    spec = resolve_spec(settled, hosts=found.hosts, hccn_texts=found.hccn_texts, scheduler_port=found.scheduler_port,
                        gpu_ids=found.gpu_ids)
    return _start(ns, spec, remote.rank_groups, remote.dry_run_text)


def _start(ns: argparse.Namespace, spec, factory, dry_run_text) -> int:
    """Print the plan (--dry-run) or run the job with the launcher's group factory."""
    from launcher.launch import launch, prepare

    _checkpoint()
    if ns.dry_run:
        from launcher.job.dry_run import plan_json, plan_text

        plan, files = prepare(spec)
        sys.stdout.write(plan_json(plan, files) if ns.json else plan_text(plan, files))
        if not ns.json and dry_run_text is not None:
            sys.stdout.write(dry_run_text(plan))  # per host: how it is reached, what runs there
        return 0
    from launcher.run.orphans import become_subreaper, kill_leftover_children
    from launcher.run.supervisor import Interrupt

    interrupt = Interrupt()
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        # Our early handler: hand over to the job's Interrupt first, then carry over what it noted.
        signal.signal(signal.SIGINT, lambda signum, frame: interrupt.trigger(signum))
    _checkpoint()

    become_subreaper()  # what escapes a rank's keeper comes back here, not to init
    from launcher.launch import LaunchInterrupted

    try:
        # From here launch()'s handlers own SIGINT/SIGTERM/SIGHUP; one that came meanwhile is passed on.
        if _EARLY_SIGNALS:
            interrupt.trigger(_EARLY_SIGNALS[0])
        result = launch(spec, group_factory=factory, plain_interval=ns.status_interval, interrupt=interrupt)
    except LaunchInterrupted as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # A group that could not start (e.g. a host that went away after pre-flight); every
        # group was closed by the supervisor before this reaches here.
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        kill_leftover_children()
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
