"""Ask Slurm about the allocation this process runs in (the effects behind slurm_allocation).

``current_allocation()`` reads the job-scoped environment and runs ``scontrol show
hostnames`` and ``scontrol show node -o`` once each; every failure is a SlurmQueryError
with one line naming the command and what it said.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Mapping, Optional, Sequence

from launcher.cluster.slurm_allocation import (SlurmAllocation, SlurmJobEnv, SlurmParseError,
                                               allocation)

QUERY_TIMEOUT_S = 30.0


class SlurmQueryError(Exception):
    """A Slurm client failed or said something unexpected; the message is one line."""


def have_srun() -> bool:
    return shutil.which("srun") is not None


def in_allocation(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True inside salloc / an sbatch script / a step: SLURM_JOB_ID is set."""
    environ = os.environ if environ is None else environ
    return bool(environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID"))


def run_client(argv: Sequence[str], environ: Optional[Mapping[str, str]] = None) -> str:
    """stdout of a Slurm client; SlurmQueryError with its stderr's last line when it fails."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=QUERY_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, env=None if environ is None else dict(environ))
    except FileNotFoundError:
        raise SlurmQueryError(f"{argv[0]}: not found (is this a Slurm client host?)") from None
    except subprocess.TimeoutExpired:
        raise SlurmQueryError(f"{' '.join(argv)}: no answer in {QUERY_TIMEOUT_S:g} s (is slurmctld up?)") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SlurmQueryError(f"{' '.join(argv)}: {last}")
    return done.stdout


def current_allocation(environ: Optional[Mapping[str, str]] = None) -> SlurmAllocation:
    """The allocation of SLURM_JOB_ID: its nodes in order, with addresses and CPUs."""
    environ = os.environ if environ is None else environ
    try:
        job = SlurmJobEnv.from_environ(environ)
        if job is None:
            raise SlurmQueryError("--launcher slurm: not inside a Slurm allocation (SLURM_JOB_ID is not set); "
                                  "use salloc/sbatch, or --submit slurm")
        hostnames = run_client(["scontrol", "show", "hostnames", job.nodelist], environ)
        names = ",".join(line.strip() for line in hostnames.splitlines() if line.strip())
        nodes = run_client(["scontrol", "show", "node", "-o", names], environ)
        found = allocation(job.job_id, hostnames, nodes, job.cpus_per_node)
    except (SlurmParseError, ValueError) as err:
        raise SlurmQueryError(str(err)) from None
    if job.num_nodes is not None and job.num_nodes != len(found.nodes):
        raise SlurmQueryError(f"SLURM_JOB_NUM_NODES={job.num_nodes} but {job.nodelist} names {len(found.nodes)} nodes")
    return found
