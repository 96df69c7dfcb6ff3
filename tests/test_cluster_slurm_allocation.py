"""Slurm allocation parsing (scontrol output, per-node counts, Gres) and the real query against slurmd."""
from __future__ import annotations

import json
import sys

import pytest

from launcher.cluster import slurm_allocation as sa
from launcher.cluster.slurm_query import SlurmQueryError, current_allocation

ONE_LINE = (
    "NodeName=gpu01 Arch=x86_64 CoresPerSocket=32 CPUAlloc=0 CPUEfctv=64 CPUTot=64 CPULoad=0.10 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:a100:8(S:0-1) NodeAddr=10.1.0.11 "
    "NodeHostName=gpu01 Version=22.05.8 OS=Linux 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 "
    "RealMemory=512000 State=ALLOCATED ThreadsPerCore=1 CfgTRES=cpu=64,mem=500G,billing=64,gres/gpu=8\n"
    "NodeName=gpu02 Arch=x86_64 CPUTot=64 Gres=gpu:a100:8(S:0-1) NodeAddr=10.1.0.12 NodeHostName=gpu02 "
    "State=ALLOCATED\n"
)

MULTI_LINE = """NodeName=npu1 Arch=aarch64 CoresPerSocket=48
   CPUAlloc=0 CPUEfctv=192 CPUTot=192 CPULoad=1.00
   Gres=npu:8
   NodeAddr=192.168.1.21 NodeHostName=npu1 Version=23.02.7
   OS=Linux 5.10.0 #1 SMP
   State=IDLE ThreadsPerCore=1

NodeName=npu2 Arch=aarch64 CoresPerSocket=48
   CPUTot=192 Gres=npu:8,gpu:0
   NodeAddr=192.168.1.22 NodeHostName=npu2
   State=MIXED
"""


def test_one_line_records_keep_values_with_spaces_and_equals_signs():
    records = sa.parse_node_records(ONE_LINE)
    assert [r["NodeName"] for r in records] == ["gpu01", "gpu02"]
    assert records[0]["OS"] == "Linux 6.1.0-18-amd64 #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1"
    assert records[0]["CfgTRES"] == "cpu=64,mem=500G,billing=64,gres/gpu=8"


def test_allocation_orders_nodes_as_hostnames_lists_them():
    alloc = sa.allocation("77", "gpu02\ngpu01\n", ONE_LINE, "64(x2)")
    assert alloc.node_names == ("gpu02", "gpu01")
    assert [n.address for n in alloc.nodes] == ["10.1.0.12", "10.1.0.11"]
    assert alloc.cpus_per_node == (64, 64)
    assert alloc.devices_per_node("GPU") == 8
    assert alloc.devices_per_node("Ascend") is None


def test_multi_line_records_and_npu_gres():
    nodes = sa.parse_nodes(MULTI_LINE)
    assert nodes["npu1"].cpus == 192 and nodes["npu1"].address == "192.168.1.21"
    assert nodes["npu2"].device_count("Ascend") == 8
    assert nodes["npu2"].device_count("GPU") == 0
    assert sa.allocation("5", "npu1\nnpu2", MULTI_LINE).devices_per_node("Ascend") == 8


@pytest.mark.parametrize("text, counts", [("2(x3),1", (2, 2, 2, 1)), ("16", (16,)), ("4(x2)", (4, 4))])
def test_compressed_counts(text, counts):
    assert sa.parse_counts(text) == counts


@pytest.mark.parametrize("bad", ["2(x)", "a", "2,,1", "(x2)"])
def test_bad_counts_name_the_variable(bad):
    with pytest.raises(sa.SlurmParseError, match="SLURM_JOB_CPUS_PER_NODE"):
        sa.parse_counts(bad)


def test_missing_node_record_is_named():
    with pytest.raises(sa.SlurmParseError, match="no record for allocated node gpu03"):
        sa.allocation("1", "gpu01\ngpu03", ONE_LINE)


def test_text_before_any_node_is_refused():
    with pytest.raises(sa.SlurmParseError, match="before any NodeName"):
        sa.parse_nodes("garbage NodeName=a")


def test_job_env_outside_and_inside_an_allocation():
    assert sa.SlurmJobEnv.from_environ({}) is None
    job = sa.SlurmJobEnv.from_environ({"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "n[1-2]",
                                       "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_CPUS_PER_NODE": "1(x2)",
                                       # step-scoped ids are ignored: they do not describe the allocation
                                       "SLURM_PROCID": "3", "SLURM_NODEID": "1"})
    assert (job.job_id, job.nodelist, job.num_nodes, job.cpus_per_node) == ("9", "n[1-2]", 2, "1(x2)")
    with pytest.raises(sa.SlurmParseError, match="SLURM_JOB_NODELIST"):
        sa.SlurmJobEnv.from_environ({"SLURM_JOB_ID": "9"})


def test_current_allocation_outside_slurm_says_how_to_get_one():
    with pytest.raises(SlurmQueryError, match="not inside a Slurm allocation"):
        current_allocation({"PATH": "/usr/bin:/bin"})


def test_current_allocation_inside_a_real_salloc(slurm_no_jobs_left, tmp_path):
    """The query runs inside a real allocation of both nodes (as launch-train would) and prints it."""
    cluster = slurm_no_jobs_left
    script = ("import json; from launcher.cluster.slurm_query import current_allocation as c; a = c(); "
              "print(json.dumps([a.job_id, [[n.name, n.address, n.cpus] for n in a.nodes], list(a.cpus_per_node)]))")
    out = cluster.run("salloc", "-N2", "--ntasks-per-node=2", sys.executable, "-c", script).stdout
    job_id, nodes, cpus = json.loads(out.strip().splitlines()[-1])
    assert job_id.isdigit()
    assert nodes == [[n.name, n.address, 16] for n in cluster.nodes]
    assert cpus == [2, 2]


def test_which_launcher_runs_the_job(tmp_path):
    from launcher.backends import default_launcher, select_backend
    from launcher.backends.local import LocalBackend
    from launcher.errors import LaunchError
    from launcher.job.options import LaunchOptions

    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\n")
    srun.chmod(0o755)
    inside = {"SLURM_JOB_ID": "7", "PATH": str(tmp_path)}
    plain = LaunchOptions()
    assert default_launcher(plain, inside) == "slurm"
    assert default_launcher(LaunchOptions(hosts="h1"), inside) == "ssh"  # hosts named by hand: SSH
    assert default_launcher(plain, {"SLURM_JOB_ID": "7", "PATH": "/nonexistent"}) == "ssh"  # no srun here
    assert default_launcher(plain, {"PATH": str(tmp_path)}) == "ssh"
    assert isinstance(select_backend(LaunchOptions(launcher="local"), inside), LocalBackend)
    with pytest.raises(LaunchError, match="--launcher 'pbs'"):
        select_backend(LaunchOptions(launcher="pbs"), inside)
