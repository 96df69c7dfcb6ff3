"""The --submit slurm batch script: every value quoted, and real sbatch reads it as written."""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest

from launcher.cluster.slurm_submit import SbatchRequest, SubmitError, render_sbatch
from launcher.job.render import template_environment

NASTY = "it's; $(touch /tmp/pwned) `x` \"q\""


def request(tmp_path: Path, **kw) -> SbatchRequest:
    base = dict(job_id="20261201-1-ab", job_name=NASTY, job_dir=tmp_path / "job dir", nodes=2, tasks_per_node=3,
                launch_command=("launch-train", "--launcher", "slurm", "--", "--note", NASTY),
                partition="debug", time="0:10:00", account="vision", slurm_args=("--exclusive", "--comment=" + NASTY))
    base.update(kw)
    return SbatchRequest(**base)


def test_script_quotes_every_value_and_is_valid_bash(tmp_path):
    text = render_sbatch(request(tmp_path), template_environment())
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    lines = text.splitlines()
    assert f"#SBATCH --job-name={shlex.quote(NASTY)}" in lines
    assert f"#SBATCH --chdir={shlex.quote(str(tmp_path / 'job dir'))}" in lines
    assert f"#SBATCH {shlex.quote('--comment=' + NASTY)}" in lines
    exec_line = next(line for line in lines if line.startswith("exec "))
    assert shlex.split(exec_line)[1:] == ["launch-train", "--launcher", "slurm", "--", "--note", NASTY]


@pytest.mark.parametrize("kw, message", [
    (dict(time="10 min"), "--time '10 min'"), (dict(slurm_args=("exclusive",)), "--slurm-arg 'exclusive'"),
    (dict(partition="a b"), "--partition 'a b'"), (dict(nodes=0), "--nodes 0"),
    (dict(job_dir=Path("rel")), "absolute"),
])
def test_bad_requests_name_the_flag(tmp_path, kw, message):
    with pytest.raises(SubmitError, match=message):
        request(tmp_path, **kw)


def test_real_sbatch_reads_the_quoted_lines_as_written(slurm_no_jobs_left, tmp_path):
    cluster = slurm_no_jobs_left
    job_dir = tmp_path / "job dir"
    job_dir.mkdir()
    probe = ("bash", "-c", 'echo "name=$SLURM_JOB_NAME nodes=$SLURM_JOB_NUM_NODES tasks=$SLURM_TASKS_PER_NODE '
                           'cwd=$PWD"; echo "arg=$1"', "probe", NASTY)
    text = render_sbatch(request(tmp_path, launch_command=probe, partition="debug", account=None,
                                 slurm_args=("--comment=" + NASTY,)), template_environment())
    script = job_dir / "submit.sbatch"
    script.write_text(text)
    job_id = cluster.run("sbatch", "--parsable", str(script)).stdout.strip().split(";")[0]
    output = job_dir / f"slurm-{job_id}.out"
    deadline = time.monotonic() + 30
    while cluster.job_state(job_id) not in ("COMPLETED", "FAILED", "CANCELLED") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cluster.job_state(job_id) == "COMPLETED"
    lines = output.read_text().splitlines()
    assert f"name={NASTY} nodes=2 tasks=3(x2) cwd={job_dir}" in lines
    assert f"arg={NASTY}" in lines
    shown = cluster.run("scontrol", "show", "job", job_id).stdout
    assert f"Comment={NASTY}" in shown
    assert not Path("/tmp/pwned").exists()
