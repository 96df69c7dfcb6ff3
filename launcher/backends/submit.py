"""The submit side of the slurm and k8s backends: a batch script or manifests instead of a start.

--submit slurm   renders <job-dir>/submit.sbatch (job_templates/slurm/submit.sbatch.j2), which runs
                 ``launch-train --launcher slurm`` with the same options inside the allocation, submits
                 it with sbatch and prints the Slurm job id and the job dir; --wait waits and exits
                 with the job's status; --dry-run prints the script and submits nothing.
--submit k8s     renders <job-dir>/k8s/*.yaml (job_templates/k8s/) for --k8s-kind volcano|msjob|ascendjob,
                 every pod running ``launch-train --from-env`` with the same options; --apply runs
                 ``kubectl apply -f <job-dir>/k8s/`` when kubectl has a cluster configured, else the
                 command is printed (exit 0: the manifests are written, nothing was applied); --dry-run
                 prints the manifests and writes nothing.

The command that runs inside is rebuilt from the parsed options (``LaunchOptions.to_argv()``)
with the job dir and job id chosen here, so the job that runs is the one that was asked for.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

from launcher.backends.base import Backend
from launcher.errors import LaunchError
from launcher.job.options import LaunchOptions
from launcher.job.safe_text import visible

PROG = "launch-train"


class SubmitBackend(Backend):
    """A backend that hands the job to a cluster's scheduler; the ranks start inside (slurm / k8s-pod)."""

    def groups(self, plan):
        raise LaunchError(f"--submit {self.name}: the job's ranks are started inside the cluster, not from here")


class SlurmSubmit(SubmitBackend):
    name = "slurm"

    def submit(self, options: LaunchOptions) -> int:
        return submit_slurm(options)


class K8sSubmit(SubmitBackend):
    name = "k8s"

    def submit(self, options: LaunchOptions) -> int:
        return submit_k8s(options)


def check_job_options(options: LaunchOptions) -> None:
    """Refuse here what the launch inside the job would refuse, before anything is written or submitted.

    A submission must not fill in a bad value on the job's behalf either (``--devices 0`` read
    as "unset", so one rank; ``--sched-port 0`` as the default port).
    """
    from launcher.job.platforms import check_device_count
    from launcher.job.ports import check_port

    if options.devices is not None:
        check_device_count(options.devices)
    if options.sched_port is not None:
        check_port(options.sched_port)


def _job_dir_and_id(options: LaunchOptions) -> tuple[Path, str]:
    from launcher.job.resolve import check_job_dir_free
    from launcher.job.options import new_job_id
    from launcher.job.resolve import check_job_dir
    from launcher.job.safe_text import refuse_control

    job_id = new_job_id()
    if options.job_dir is not None:
        try:
            # The job dir goes into #SBATCH directive lines, where a newline would start a command.
            refuse_control(str(options.job_dir), "--job-dir")
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
    job_dir = check_job_dir((options.job_dir if options.job_dir is not None else Path("jobs") / job_id).expanduser())
    check_job_dir_free(job_dir)
    return job_dir, job_id


def _write_new(path: Path, text: str, executable: bool = False) -> None:
    from launcher.atomic_write import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text, executable=executable)


# ------------------------------------------------------------------------------ Slurm
def submit_slurm(options: LaunchOptions) -> int:
    from launcher.cluster.slurm_submit import SCRIPT_NAME, SbatchRequest, SubmitError, render_sbatch
    from launcher.job.render import check_templates_dir, template_environment

    submit = options.submit
    assert submit is not None
    check_job_options(options)
    job_dir, job_id = _job_dir_and_id(options)
    inner = dataclasses.replace(options, submit=None, dry_run=False, json=False, launcher="slurm", job_dir=job_dir,
                                job_id=job_id, from_submit=True)
    command = [sys.executable, "-m", "launcher.cli", *inner.to_argv()]
    templates = check_templates_dir(options.templates) if options.templates is not None else None
    try:
        request = SbatchRequest(job_id=job_id, job_name=f"launch-train-{job_id}", job_dir=job_dir, nodes=submit.nodes,
                                tasks_per_node=1 if options.devices is None else options.devices,
                                launch_command=tuple(command),
                                resume_command=(sys.executable, "-m", "launcher.cli", "--resume", str(job_dir)),
                                partition=submit.partition, time=submit.time, account=submit.account,
                                slurm_args=tuple(submit.slurm_args))
        text = render_sbatch(request, template_environment(templates))
    except SubmitError as exc:
        raise LaunchError(str(exc)) from None
    if options.dry_run:
        sys.stdout.write(text)
        return 0
    if shutil.which("sbatch") is None:
        raise LaunchError("--submit slurm: sbatch not found (is this a Slurm client host?)")
    script = job_dir / SCRIPT_NAME
    made_job_dir = not job_dir.exists()
    _write_new(script, text, executable=True)
    argv = ["sbatch", "--parsable", *(["--wait"] if submit.wait else []), str(script)]
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
    if not submit.wait:
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
def submit_k8s(options: LaunchOptions) -> int:
    from launcher.cluster.k8s_manifests import DEFAULT_SCHED_PORT, K8sJob, ManifestError, k8s_name, render_manifests
    from launcher.cluster.k8s_manifests import manifest_environment
    from launcher.job.platforms import check_platform, default_mode
    from launcher.job.render import check_templates_dir

    submit = options.submit
    assert submit is not None
    kind = options.k8s_kind
    if kind is None:
        raise LaunchError("--submit k8s: give --k8s-kind volcano, msjob or ascendjob")
    if not submit.image:
        raise LaunchError("--submit k8s: give --image (a container image with launch-train and deeplab in it)")
    check_job_options(options)
    platform = check_platform(options.platform) if options.platform else ("Ascend" if kind == "ascendjob" else "CPU")
    # No mpirun spans pods: GPU pods start through the dynamic cluster.
    mode = options.mode or default_mode(platform, mpirun_spans_hosts=False)
    job_dir, job_id = _job_dir_and_id(options)
    job_mount = "/job"
    pod_job_dir = f"{job_mount}/{job_id}"
    port = DEFAULT_SCHED_PORT if options.sched_port is None else options.sched_port
    inner = dataclasses.replace(options, submit=None, dry_run=False, json=False, launcher=None, from_env=False,
                                k8s_kind=None, platform=platform, mode=mode, sched_port=port,
                                job_dir=Path(pod_job_dir), job_id=job_id)
    command = ["launch-train", "--from-env", "--k8s-kind", kind, *inner.to_argv()]
    templates = check_templates_dir(options.templates) if options.templates is not None else None
    try:
        job = K8sJob(kind=kind, name=k8s_name(job_id), job_id=job_id, image=submit.image, worker_pods=submit.nodes,
                     devices_per_pod=1 if options.devices is None else options.devices, platform=platform, mode=mode,
                     pod_command=tuple(command),
                     namespace=submit.namespace, sched_port=port, job_mount=job_mount,
                     max_restarts=options.max_restarts)
        manifests = render_manifests(job, list(submit.k8s_set), env=manifest_environment(templates))
    except ManifestError as exc:
        raise LaunchError(str(exc)) from None
    if options.dry_run:
        for manifest in manifests:
            sys.stdout.write(f"---\n# {manifest.path}\n{manifest.text}")
        return 0
    for manifest in manifests:
        _write_new(job_dir / manifest.path, manifest.text)
    k8s_dir = job_dir / "k8s"
    print(f"{PROG}: wrote {', '.join(str(job_dir / m.path) for m in manifests)}")
    apply = ["kubectl", "apply", "-f", str(k8s_dir)]
    if not submit.apply:
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
