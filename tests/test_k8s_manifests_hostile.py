"""--submit k8s against hostile --k8s-set settings and training arguments: one line, or exact values."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

LAUNCH_TRAIN = str(Path(sys.executable).parent / "launch-train")
KIND_ARGS = {"volcano": ["--platform", "CPU"], "msjob": ["--platform", "CPU"],
             "ascendjob": ["--platform", "Ascend", "--devices", "8"]}


def submit_k8s(tmp_path: Path, kind: str, *args: str, training: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([LAUNCH_TRAIN, "--submit", "k8s", "--k8s-kind", kind, "--image", "reg/deeplab:1",
                           *KIND_ARGS[kind], "--dry-run", "--job-dir", str(tmp_path / "job"), *args, "--", *training],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("kind, settings, message", [
    ("volcano", ["pod.spec=1", "container.image=x"], "'pod.spec=1': leaves a pod template without its training"),
    ("volcano", ["spec.tasks=[1]"], "'spec.tasks=[1]': leaves the job's spec.tasks without its pod templates"),
    ("volcano", ["spec.tasks=null"], "leaves the job's spec.tasks without its pod templates"),
    ("volcano", ["spec.tasks=[]"], "leaves the job's spec.tasks without its pod templates"),
    ("volcano", ["pod.spec.containers=[]"], "leaves a pod template without its training container"),
    ("msjob", ["spec.msReplicaSpecs=abc"], "leaves the job's spec.msReplicaSpecs without its pod templates"),
    ("ascendjob", ["spec.replicaSpecs.Worker=7"], "leaves the job's spec.replicaSpecs without its pod templates"),
    ("volcano", [".".join(["a"] * 3000) + "=1"], "a path of more than 64 parts"),
    ("volcano", ["spec.x=" + "[" * 5000 + "]" * 5000], "nested more than 64 levels deep"),
    ("volcano", ["spec.x=" + "{a: " * 5000 + "1" + "}" * 5000], "nested more than 64 levels deep"),
    ("volcano", ["spec.x[" + "9" * 40 + "]=1"], "is too large"),
])
def test_settings_that_break_the_jobs_shape_are_one_line(tmp_path, kind, settings, message):
    done = submit_k8s(tmp_path, kind, *[f"--k8s-set={s}" for s in settings])
    assert done.returncode == 2, done.stdout[-300:]
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr[:500]
    assert "Traceback" not in done.stderr and done.stdout == "" and not (tmp_path / "job").exists()


@pytest.mark.parametrize("kind", ["volcano", "msjob", "ascendjob"])
def test_line_separators_and_other_yaml_specials_in_a_training_arg_reach_every_pod_exactly(tmp_path, kind):
    arg = "a\u2028b\x85c\u2029d\x7fe\x9ff\ufeffg\tend"
    done = submit_k8s(tmp_path, kind, training=("--note", arg))
    assert done.returncode == 0, done.stderr
    documents = [d for d in yaml.safe_load_all(done.stdout) if d]
    commands = []
    for doc in documents:
        spec = doc.get("spec") or {}
        groups = spec.get("tasks") or list((spec.get("msReplicaSpecs") or spec.get("replicaSpecs") or {}).values())
        commands += [g["template"]["spec"]["containers"][0]["command"] for g in groups]
    assert commands and all(command[-2:] == ["--note", arg] for command in commands), commands
