"""launch-train --submit slurm|k8s and --from-env: the flags, and what each does from the command line.

--submit slurm   renders <job-dir>/submit.sbatch (job_templates/slurm/submit.sbatch.j2), which runs
                 ``launch-train --launcher slurm`` with the same options inside the allocation, submits
                 it with sbatch and prints the Slurm job id and the job dir; --wait waits and exits
                 with the job's status; --dry-run prints the script and submits nothing.
--submit k8s     renders <job-dir>/k8s/*.yaml (job_templates/k8s/) for --k8s-kind volcano|msjob|ascendjob,
                 every pod running ``launch-train --from-env`` with the same options; --apply runs
                 ``kubectl apply -f <job-dir>/k8s/`` when kubectl has a cluster configured, else the
                 command is printed (exit 0: the manifests are written, nothing was applied); --dry-run prints the manifests and writes nothing.
--from-env       (in a pod) see launcher/cluster/pod_launch.py.

The inner command is the user's own options minus the submit-only ones, plus the job dir and
job id chosen here, so the job that runs is the one that was asked for, word for word.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from launcher.errors import LaunchError
from launcher.job.safe_text import visible
from launcher.job.strict_numbers import seconds_arg, whole_number_arg

PROG = "launch-train"
# Options that only concern submitting (with how many values they take); never passed inside the job.
SUBMIT_ONLY = {"--submit": 1, "--nodes": 1, "--partition": 1, "--time": 1, "--account": 1, "--slurm-arg": 1,
               "--wait": 0, "--k8s-kind": 1, "--image": 1, "--namespace": 1, "--k8s-set": 1, "--apply": 0,
               "--job-dir": 1, "--launcher": 1, "--dry-run": 0, "--json": 0, "--job-id": 1, "--from-submit": 0,
               "--rank-table-timeout": 1}
SUBMITTED_FILES = ("submit.sbatch", "slurm-*.out")
MAX_NODES = 100_000
MAX_RANK_TABLE_WAIT_S = 7 * 86400


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("submitting to a cluster (Slurm, Kubernetes)")
    group.add_argument("--submit", choices=("slurm", "k8s"), help="render the job's batch script / manifests and submit")
    group.add_argument("--nodes", type=whole_number_arg("--nodes", 1, MAX_NODES), default=1, metavar="N",
                       help="--submit slurm: nodes to ask for (default 1)")
    group.add_argument("--partition", metavar="P", help="--submit slurm: sbatch --partition")
    group.add_argument("--time", metavar="T", help="--submit slurm: sbatch --time (e.g. 2:00:00)")
    group.add_argument("--account", metavar="A", help="--submit slurm: sbatch --account")
    group.add_argument("--slurm-arg", action="append", default=[], metavar="ARG",
                       help="--submit slurm: one more sbatch option, e.g. --slurm-arg=--exclusive (repeatable)")
    group.add_argument("--wait", action="store_true", help="--submit slurm: wait and exit with the job's status")
    group.add_argument("--k8s-kind", choices=("volcano", "msjob", "ascendjob"),
                       help="--submit k8s: the job object (in a pod with --from-env: whose variables to read)")
    group.add_argument("--image", metavar="IMG", help="--submit k8s: container image with launch-train and deeplab")
    group.add_argument("--namespace", default="default", metavar="N", help="--submit k8s: namespace (default default)")
    group.add_argument("--k8s-set", action="append", default=[], metavar="PATH=VALUE",
                       help="--submit k8s: set a manifest field (pod.*, container.*, or from the job's root)")
    group.add_argument("--apply", action="store_true", help="--submit k8s: kubectl apply the manifests")
    group.add_argument("--from-env", action="store_true",
                       help="in a pod: read the operator's variables and start this pod's ranks")
    group.add_argument("--rank-table-timeout", type=seconds_arg("--rank-table-timeout", 0, MAX_RANK_TABLE_WAIT_S),
                       default=600.0, metavar="S",
                       help="--from-env: how long to wait for the mounted rank table (default 600)")
    group.add_argument("--job-id", help=argparse.SUPPRESS)
    group.add_argument("--from-submit", action="store_true", help=argparse.SUPPRESS)


def inner_options(own: Sequence[str]) -> list[str]:
    """The user's launcher options without the submit-only ones (values included, either spelling)."""
    out, skip = [], 0
    for word in own:
        if skip:
            skip -= 1
            continue
        name = word.split("=", 1)[0]
        if name in SUBMIT_ONLY:
            if "=" not in word:
                skip = SUBMIT_ONLY[name]
            continue
        out.append(word)
    return out


def check_job_options(ns: argparse.Namespace, training_args: Sequence[str]) -> None:
    """Refuse here what the launch inside the job would refuse, before anything is written or submitted.

    A submission must not fill in a bad value on the job's behalf either (``--devices 0`` read
    as "unset", so one rank; ``--sched-port 0`` as the default port).
    """
    from launcher.cli import options_from_args
    from launcher.job.platforms import check_device_count
    from launcher.job.ports import check_port

    options_from_args(ns, training_args)  # LaunchOptions checks --env, --sched-port, the training args
    if ns.devices is not None:
        check_device_count(ns.devices)
    if ns.sched_port is not None:
        check_port(ns.sched_port)


def _job_dir_and_id(ns: argparse.Namespace) -> tuple[Path, str]:
    from launcher.job.resolve import check_job_dir_free
    from launcher.job.options import new_job_id
    from launcher.job.resolve import check_job_dir
    from launcher.job.safe_text import refuse_control

    job_id = new_job_id()
    if ns.job_dir is not None:
        try:
            # The job dir goes into #SBATCH directive lines, where a newline would start a command.
            refuse_control(str(ns.job_dir), "--job-dir")
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
    job_dir = check_job_dir((ns.job_dir if ns.job_dir is not None else Path("jobs") / job_id).expanduser())
    check_job_dir_free(job_dir)
    return job_dir, job_id


def _write_new(path: Path, text: str, executable: bool = False) -> None:
    from launcher.atomic_write import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, executable=executable)


# ------------------------------------------------------------------------------ Slurm
def submit_slurm(ns: argparse.Namespace, own: Sequence[str], training_args: Sequence[str]) -> int:
    from launcher.cluster.slurm_submit import SCRIPT_NAME, SbatchRequest, SubmitError, render_sbatch
    from launcher.job.render import check_templates_dir, template_environment

    check_job_options(ns, training_args)
    job_dir, job_id = _job_dir_and_id(ns)
    command = [sys.executable, "-m", "launcher.cli", *inner_options(own), "--launcher", "slurm",
               "--job-dir", str(job_dir), "--job-id", job_id, "--from-submit", "--", *training_args]
    templates = check_templates_dir(ns.templates) if ns.templates is not None else None
    try:
        request = SbatchRequest(job_id=job_id, job_name=f"launch-train-{job_id}", job_dir=job_dir, nodes=ns.nodes,
                                tasks_per_node=1 if ns.devices is None else ns.devices, launch_command=tuple(command),
                                partition=ns.partition, time=ns.time, account=ns.account,
                                slurm_args=tuple(ns.slurm_arg))
        text = render_sbatch(request, template_environment(templates))
    except SubmitError as exc:
        raise LaunchError(str(exc)) from None
    if ns.dry_run:
        sys.stdout.write(text)
        return 0
    if shutil.which("sbatch") is None:
        raise LaunchError("--submit slurm: sbatch not found (is this a Slurm client host?)")
    script = job_dir / SCRIPT_NAME
    made_job_dir = not job_dir.exists()
    _write_new(script, text, executable=True)
    argv = ["sbatch", "--parsable", *(["--wait"] if ns.wait else []), str(script)]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
        first = proc.stdout.readline().strip() if proc.stdout else ""
        slurm_id = first.split(";")[0]
        failure = None
        if not (slurm_id.isascii() and slurm_id.isdigit()):
            err = proc.communicate()[1].strip().splitlines()
            failure = f"sbatch {script}: {err[-1] if err else 'no job id printed'}"
    except OSError as exc:
        failure = f"sbatch: {exc.strerror or exc}"
    if failure is not None:
        # Nothing was submitted: leave the job dir as it was, so the same --job-dir can be used again.
        script.unlink(missing_ok=True)
        if made_job_dir:
            with contextlib.suppress(OSError):
                job_dir.rmdir()
        raise LaunchError(visible(failure, 500))
    print(f"{PROG}: submitted Slurm job {slurm_id}; job dir {job_dir}", flush=True)
    print(f"{PROG}: output {job_dir / f'slurm-{slurm_id}.out'}; cancel with: scancel {slurm_id}", flush=True)
    if not ns.wait:
        proc.communicate()
        return 0 if proc.returncode == 0 else 1
    try:
        _out, err = proc.communicate()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        print(f"{PROG}: stopped waiting; Slurm job {slurm_id} keeps running (scancel {slurm_id} stops it)",
              file=sys.stderr)
        return 130
    status = proc.returncode
    print(f"{PROG}: Slurm job {slurm_id} ended with status {status}; job dir {job_dir}", file=sys.stderr)
    return status


# ------------------------------------------------------------------------------ Kubernetes
def submit_k8s(ns: argparse.Namespace, own: Sequence[str], training_args: Sequence[str]) -> int:
    from launcher.cluster.k8s_manifests import DEFAULT_SCHED_PORT, K8sJob, ManifestError, k8s_name, render_manifests
    from launcher.cluster.k8s_manifests import manifest_environment
    from launcher.job.platforms import check_platform
    from launcher.job.render import check_templates_dir

    if ns.k8s_kind is None:
        raise LaunchError("--submit k8s: give --k8s-kind volcano, msjob or ascendjob")
    if not ns.image:
        raise LaunchError("--submit k8s: give --image (a container image with launch-train and deeplab in it)")
    check_job_options(ns, training_args)
    platform = check_platform(ns.platform) if ns.platform else ("Ascend" if ns.k8s_kind == "ascendjob" else "CPU")
    mode = ns.mode or ("rank-table" if platform == "Ascend" else "dynamic")
    job_dir, job_id = _job_dir_and_id(ns)
    job_mount = "/job"
    pod_job_dir = f"{job_mount}/{job_id}"
    port = DEFAULT_SCHED_PORT if ns.sched_port is None else ns.sched_port
    fixed = ["--platform", platform, "--mode", mode, "--sched-port", str(port)]
    own_inner = _drop(inner_options(own), ("--platform", "--mode", "--sched-port"))
    command = ["launch-train", "--from-env", "--k8s-kind", ns.k8s_kind, *fixed, *own_inner,
               "--job-dir", pod_job_dir, "--job-id", job_id, "--", *training_args]
    templates = check_templates_dir(ns.templates) if ns.templates is not None else None
    try:
        job = K8sJob(kind=ns.k8s_kind, name=k8s_name(job_id), job_id=job_id, image=ns.image, worker_pods=ns.nodes,
                     devices_per_pod=1 if ns.devices is None else ns.devices, platform=platform, mode=mode,
                     pod_command=tuple(command),
                     namespace=ns.namespace, sched_port=port, job_mount=job_mount,
                     max_restarts=ns.max_restarts)
        manifests = render_manifests(job, ns.k8s_set, env=manifest_environment(templates))
    except ManifestError as exc:
        raise LaunchError(str(exc)) from None
    if ns.dry_run:
        for manifest in manifests:
            sys.stdout.write(f"---\n# {manifest.path}\n{manifest.text}")
        return 0
    for manifest in manifests:
        _write_new(job_dir / manifest.path, manifest.text)
    k8s_dir = job_dir / "k8s"
    print(f"{PROG}: wrote {', '.join(str(job_dir / m.path) for m in manifests)}")
    apply = ["kubectl", "apply", "-f", str(k8s_dir)]
    if not ns.apply:
        print(f"{PROG}: submit with: {' '.join(apply)}")
        return 0
    if shutil.which("kubectl") is None:
        raise LaunchError("--apply: kubectl not found; apply the manifests with: " + " ".join(apply))
    context = subprocess.run(["kubectl", "config", "current-context"], capture_output=True, text=True)
    if context.returncode != 0:
        print(f"{PROG}: not applied: kubectl has no cluster configured (no current context); "
              f"submit with: {' '.join(apply)}", file=sys.stderr)
        return 0
    done = subprocess.run(apply, text=True)
    return 0 if done.returncode == 0 else 1


def _drop(words: Sequence[str], names: Sequence[str]) -> list[str]:
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in names:
            skip = "=" not in word
            continue
        out.append(word)
    return out

