"""The Slurm test cluster itself: two real nodes that run a two-task step, one task on each."""
from __future__ import annotations


def test_two_node_step_runs_one_task_per_node(slurm_no_jobs_left):
    cluster = slurm_no_jobs_left
    out = cluster.run("srun", "-N2", "-n2", "--label", "bash", "-c",
                      'echo "$SLURMD_NODENAME $SLURM_PROCID $SLURM_NODEID"').stdout
    lines = sorted(line.split(": ", 1)[1] for line in out.splitlines())
    assert lines == ["n1 0 0", "n2 1 1"]


def test_node_addresses_are_distinct(slurm_cluster):
    out = slurm_cluster.run("scontrol", "show", "node", "-o").stdout
    addresses = sorted(word.split("=", 1)[1] for word in out.split() if word.startswith("NodeAddr="))
    assert addresses == sorted(node.address for node in slurm_cluster.nodes)
    assert len(set(addresses)) == 2
