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

Several hosts (SSH; see launcher/backends/ssh.py and docs/launching.md)
    --hosts [user@]host[:port],...  or  --hostfile FILE (one host a line, optional slots=N, # comments)
    --ssh-config FILE         OpenSSH client config (default ~/.ssh/config); --ssh-key FILE;
                              --ssh-timeout S (default 10); --ssh-known-hosts FILE
    --ssh-accept-unknown-host-keys
                              accept host keys missing from known_hosts (default: refuse)
    --ssh-parallel N          SSH connections set up at once (default 32): the controller's
                              threads and sockets while starting follow N, not the host count
    --ssh-tree-width W        above W hosts (0: never) the controller starts W agents, each
                              of which starts the agents of its part of the hosts (a tree,
                              as Open MPI's ssh launcher spawns); default: every agent itself
                              up to 64 hosts, a tree of width 32 above
    --remote-python PATH      interpreter on the hosts (default: this one's path)
    --master-addr ADDR        scheduler address the other hosts reach (dynamic mode)
    --heartbeat-timeout S     a host's agent stops its ranks when the controller is silent this long
    --spare-hosts H1,H2       hosts (inside Slurm: nodes of the allocation) that take the place of a
                              lost host in its rank position ("spare" on a hostfile line does too)
    --min-hosts N             with no spare left, go on without a lost host while N hosts remain
                              (every rank gets LAUNCH_TRAIN_PLANNED_RANKS; deeplab.train keeps the
                              job's global batch). A host is lost when its agent is lost or silent,
                              Slurm fails its node, every rank on it is killed, or a rank's log ends
                              with a device error; a rank's own failure restarts on the same hosts.
    Before anything starts, every host is checked in parallel (SSH; python importing launcher
    and the --module's package, deeplab by default, nothing more for --entry; job dir writable;
    devices; hccn.conf on Ascend; the scheduler port on the first host); any failure prints one
    table and exits 2. The job dir is the same path on every host;
    on Ascend --hccn-conf may contain {host} (each host's own file) and one rank table is merged
    from all hosts. A rank failing on any host, Ctrl-C, or a lost SSH connection stops every rank
    on every host.
Inside a Slurm allocation (see launcher/backends/slurm.py and docs/clusters.md)
    --launcher slurm|ssh|local  who starts the ranks (the backend); default slurm when SLURM_JOB_ID is set, srun
                              exists and no --hosts/--hostfile is given, else ssh/local by --hosts. Under slurm the hosts are the
                              allocation's nodes (--hosts is refused); ranks per node --devices, else
                              SLURM_NTASKS_PER_NODE, else the nodes' Gres. One task per node first checks
                              the job dir is visible there (shared file system; else exit 2), and reads
                              hccn.conf in rank-table mode ({host} = node name); then the ranks run as ONE
                              `srun --kill-on-bad-exit=1` step (each task runs LOG<SLURM_PROCID>/run.sh),
                              the scheduler as a one-task step on the first node; a failure, Ctrl-C and the
                              end cancel the steps. srun's own output: <job-dir>/srun.log.

Submitting to Slurm or Kubernetes (launcher/backends/submit.py, docs/clusters.md)
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
    --grace S                 SIGTERM/SIGUSR1 (a preemption) first ask every rank to save a checkpoint
                              and stop (SIGUSR1 to the rank), waiting up to S seconds (default 60;
                              0: stop at once); job.json status.preempted records the step saved
    --resume JOB_DIR          continue a stopped, failed or preempted job in its job dir as its next
                              attempt, with the options job.json recorded (only --tee,
                              --status-interval, --dry-run, --json besides)
    A rank whose data wait or device probe ("timing:" lines) stays above 1.5x the other ranks' is
    named a straggler: on the console, in --status and in job.json status.stragglers.

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
    result = run_job(options)                                           (launcher.run_job)
    result.exit_code, result.first_failure (RankFailure), result.check() raises JobFailed
    run_job chooses where the ranks run with launcher.backends.select_backend (local, ssh, slurm,
    k8s-pod, or the submit side of slurm/k8s); pass backend= to choose yourself.
    options.to_argv() gives back the launch-train arguments of the same job.

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

# Ctrl-C in the first moments (imports, argument checks) must not print a traceback or leave
# half a job dir: as the program (not when a test imports this), a SIGINT is only noted from the
# first line on, and main() stops at its next checkpoint.
_EARLY_SIGNALS: list[int] = []
if __name__ == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") == "launch-train":
    signal.signal(signal.SIGINT, lambda signum, frame: _EARLY_SIGNALS.append(signum))

from typing import Optional, Sequence  # noqa: E402 - after the handler, on purpose

from launcher.errors import LaunchError  # noqa: E402

PROG = "launch-train"
EARLY_EXIT_MESSAGE = f"{PROG}: interrupted before the job started; nothing was written"


class _EarlyInterrupt(Exception):
    """A SIGINT noted before the job's own handlers took over."""


def _checkpoint() -> None:
    if _EARLY_SIGNALS:
        raise _EarlyInterrupt()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """argv -> options -> run_job (or a look at a running job); the exit status."""
    from launcher.job.arguments import parse_command_line

    try:
        try:
            command = parse_command_line(sys.argv[1:] if argv is None else argv, __doc__.split("\n\nWhere it runs")[0])
            _checkpoint()
            if command.options is None:
                from launcher.job_view import show_stacks, show_status

                return show_status(command.status, sys.stdout) if command.status else show_stacks(command.stack, sys.stdout)
            return _run(command.options)
        except LaunchError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 2
    except (KeyboardInterrupt, _EarlyInterrupt):
        # Ctrl-C before the job's own handlers were in place: nothing was started or written.
        print(EARLY_EXIT_MESSAGE, file=sys.stderr)
        return 130


def _run(options) -> int:
    from launcher.run.orphans import become_subreaper, kill_leftover_children
    from launcher.run.supervisor import Interrupt
    from launcher.run_job import run_job

    interrupt = Interrupt()
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        # Our early handler: hand over to the job's Interrupt (launch() installs its own handlers later).
        signal.signal(signal.SIGINT, lambda signum, frame: interrupt.trigger(signum))
    _checkpoint()
    if not options.dry_run:
        become_subreaper()  # what escapes a rank's keeper comes back here, not to init
    try:
        result = run_job(options, interrupt=interrupt)
    finally:
        kill_leftover_children()
    if result.message:
        print(f"{PROG}: {result.message}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
