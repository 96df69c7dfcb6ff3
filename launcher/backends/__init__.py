"""Where the ranks of a job run: one Backend per place (launcher/backends/base.py), chosen in one function.

    local     this machine only                              launcher/backends/local.py
    ssh       --hosts/--hostfile naming other machines       launcher/backends/ssh.py
    slurm     inside an allocation (SLURM_JOB_ID), one srun  launcher/backends/slurm.py
    k8s-pod   --from-env, in a pod an operator started       launcher/backends/k8s_pod.py
    --submit slurm|k8s: a batch script / manifests           launcher/backends/submit.py

A new place is one new file with a Backend subclass, and one line in ``LAUNCHERS``.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Mapping, Optional

from launcher.backends.base import Backend, Discovered
from launcher.errors import LaunchError

if TYPE_CHECKING:  # the per-host agent imports launcher.backends.local, which loads this package first
    from launcher.job.options import LaunchOptions


def _local(options: LaunchOptions, environ: Mapping[str, str]) -> Backend:
    from launcher.backends.local import LocalBackend
    from launcher.backends.ssh import hosts_of

    entries = hosts_of(options)
    if [entry for entry in entries if entry.spare]:
        raise LaunchError("--spare-hosts: spares take the place of a lost SSH host; use --launcher ssh")
    remote = [entry.label for entry in entries if not entry.local]
    if remote:
        raise LaunchError("--launcher local: --hosts/--hostfile name other machines; use --launcher ssh")
    return LocalBackend()


def _ssh(options: LaunchOptions, environ: Mapping[str, str]) -> Backend:
    from launcher.backends.local import LocalBackend
    from launcher.backends.ssh import SshBackend, hosts_of

    entries = hosts_of(options)
    if all(entry.local and not entry.spare for entry in entries):
        if options.min_hosts is not None and options.min_hosts > len(entries):
            raise LaunchError(f"--min-hosts {options.min_hosts}: the job has only {len(entries)} host(s)")
        return LocalBackend()  # every host is this machine: no SSH needed
    return SshBackend.from_options(options, entries)


def _slurm(options: LaunchOptions, environ: Mapping[str, str]) -> Backend:
    from launcher.backends.slurm import SlurmBackend

    return SlurmBackend.from_options(options, environ)


# --launcher NAME -> how that backend is made. A new backend: one line here.
LAUNCHERS: dict[str, Callable[[LaunchOptions, Mapping[str, str]], Backend]] = {
    "slurm": _slurm,
    "ssh": _ssh,
    "local": _local,
}


def default_launcher(options: LaunchOptions, environ: Mapping[str, str]) -> str:
    """slurm inside an allocation with srun on PATH (unless --hosts/--hostfile name the hosts), else ssh
    (which is the local backend when every host is this machine)."""
    from launcher.backends.slurm import in_allocation

    if not (options.hosts or options.hostfile) and in_allocation(environ):
        return "slurm"
    return "ssh"


def select_backend(options: LaunchOptions, environ: Optional[Mapping[str, str]] = None) -> Backend:
    """The backend for these options: --submit, --from-env, --launcher, or what the environment says."""
    environ = os.environ if environ is None else environ
    if options.submit is not None:
        from launcher.backends.submit import K8sSubmit, SlurmSubmit

        return SlurmSubmit() if options.submit.target == "slurm" else K8sSubmit()
    if options.from_env:
        from launcher.backends.k8s_pod import K8sPodBackend

        return K8sPodBackend(environ)
    name = options.launcher or default_launcher(options, environ)
    if name not in LAUNCHERS:
        raise LaunchError(f"--launcher {name!r}: use one of {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name](options, environ)


__all__ = ["Backend", "Discovered", "LAUNCHERS", "default_launcher", "select_backend"]
