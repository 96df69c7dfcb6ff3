"""The per-node probe before a Slurm launch: parsing its answers, the shared job dir check, a real run."""
from __future__ import annotations

import json
import sys

import pytest

from launcher.cluster.slurm_probe import NodeProbe, ProbeError, check_shared_job_dir, parse_probe


def test_answers_come_from_files_and_stdout_says_who_answered():
    stdout = '{"node": "n1", "sees_marker": true}\nsrun: noise\n{"node": "n2", "sees_marker": false}\n'
    answers = {"n1": json.dumps({"node": "n1", "sees_marker": True, "cpus": 4, "cpu_flags": ["avx2"],
                                 "free_port": 4242, "hccn_path": "/x/n1", "hccn_text": "address_0=1.2.3.4\n"})}
    probes = parse_probe(stdout, ["n1", "n2"], answers)
    assert probes["n1"].free_port == 4242 and probes["n1"].hccn_text == "address_0=1.2.3.4\n"
    assert probes["n2"] == NodeProbe(node="n2", sees_marker=False, cpus=0)  # then check_shared_job_dir names it


def test_a_node_that_does_not_answer_is_named():
    with pytest.raises(ProbeError, match="no answer from node n2"):
        parse_probe('{"node": "n1", "sees_marker": false}\n', ["n1", "n2"])


def test_a_job_dir_some_node_cannot_see_is_a_clear_error(tmp_path):
    probes = {"n1": NodeProbe("n1", True, 4), "n2": NodeProbe("n2", False, 4), "n3": NodeProbe("n3", False, 4)}
    with pytest.raises(ProbeError) as err:
        check_shared_job_dir(probes, tmp_path)
    assert str(err.value) == (f"--job-dir {tmp_path}: not visible on node n2, n3; under Slurm the job dir must be "
                              "on a file system every node sees (e.g. your home or a shared scratch)")


def test_real_probe_of_both_nodes(slurm_no_jobs_left, tmp_path):
    cluster = slurm_no_jobs_left
    for node in cluster.node_names:
        (tmp_path / f"{node}.conf").write_text(f"address_0=192.168.9.{len(node)}\n")
    script = ("import json, sys; from pathlib import Path; from launcher.cluster.slurm_probe import run_probe; "
              f"p = run_probe(sys.executable, ['n1', 'n2'], Path({str(tmp_path)!r}), {str(tmp_path / '{host}.conf')!r}); "
              "print(json.dumps({k: [v.sees_marker, v.hccn_path, v.free_port is not None] for k, v in p.items()}))")
    out = cluster.run("salloc", "-N2", sys.executable, "-c", script).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {n: [True, str(tmp_path / f"{n}.conf"), True] for n in ("n1", "n2")}
    assert not list(tmp_path.glob(".launch-train-probe*"))  # marker and answers removed
