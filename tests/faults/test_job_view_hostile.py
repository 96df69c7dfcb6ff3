"""--status and --stack against a hostile job dir and hostile neighbours.

--stack finds a rank's processes by the variables env.sh gives them, which any process can
carry: only processes the job started (an ancestor ran a script of the job dir) and, for
root, only the job dir owner's are touched. stack.txt is never written through a LOG<rank>
symlink or a log_dir of "..". --status shows job.json's text with control characters escaped.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, "-m", "launcher.cli"]
NOBODY = 65534
SLEEPER = "import time; open(__import__('sys').argv[1], 'w').close(); time.sleep(120)"


def write_job(job_dir: Path, log_dir: str = "LOG0", **top) -> None:
    job_dir.mkdir(parents=True, exist_ok=True)
    doc = {"schema": 1, "job_id": "j1", "job_dir": str(job_dir), "platform": "CPU", "mode": "dynamic", "hosts": [{"name": "here", "local": True}],
           "ranks": [{"rank": 0, "host": "here", "log_dir": log_dir}], "status": {"state": "running"}}
    doc.update(top)
    (job_dir / "job.json").write_text(json.dumps(doc))


def start_rank_like(job_dir: Path, *, from_job_script: bool = True, user: int | None = None):
    """A Python process with the job's markers; its parent bash names a job script when from_job_script."""
    ready_dir = Path(tempfile.mkdtemp(prefix="rank-like-"))
    ready_dir.chmod(0o777)  # another user's process writes here too
    ready = ready_dir / "ready"
    script_arg = str(job_dir / "LOG0" / "run.sh") if from_job_script else "/elsewhere/run.sh"
    # bash -c CMD $0 $1: $0 is the script path (as the keeper's command line holds it), $1 the code.
    python = sys.executable if user is None else "/usr/bin/python3"  # the venv may not be open to others
    command = ["bash", "-c", f'{python} -c "$1" {ready}; :', script_arg, SLEEPER]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *command]
    env = {**os.environ, "LAUNCH_TRAIN_JOB_DIR": str(job_dir), "RANK_ID": "0"}
    proc = subprocess.Popen(command, env=env, start_new_session=True, cwd="/")
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    shutil.rmtree(ready_dir)
    return proc


@pytest.fixture
def started():
    procs = []
    yield procs
    for proc in procs:
        os.killpg(proc.pid, 9)
        proc.wait()


def stack(job_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, "--stack", str(job_dir)], capture_output=True, text=True, timeout=90, cwd=REPO)


def test_stack_dumps_a_process_the_job_started(tmp_path, started):
    job_dir = tmp_path / "job"
    write_job(job_dir)
    (job_dir / "LOG0").mkdir()
    started.append(start_rank_like(job_dir))
    done = stack(job_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "<module> (<string>:1)" in (job_dir / "LOG0" / "stack.txt").read_text()


@pytest.mark.parametrize("from_job_script, user", [
    (False, None),  # a process that only carries the job's variables
    pytest.param(True, NOBODY, marks=pytest.mark.skipif(os.geteuid() != 0, reason="needs root (another user's process)")),
], ids=["only-the-jobs-variables", "another-users-process"])
def test_stack_never_touches_a_process_the_job_did_not_start(tmp_path, started, from_job_script, user):
    job_dir = tmp_path / "job"
    write_job(job_dir)
    (job_dir / "LOG0").mkdir()
    started.append(start_rank_like(job_dir, from_job_script=from_job_script, user=user))
    done = stack(job_dir)
    assert done.returncode == 1 and "no stack" in done.stdout, done.stdout + done.stderr
    assert not (job_dir / "LOG0" / "stack.txt").exists()


def test_stack_is_never_written_through_a_log_symlink_or_beside_the_job(tmp_path, started):
    outside = tmp_path / "outside"
    outside.mkdir()
    job_dir = tmp_path / "jobs" / "job"
    write_job(job_dir)
    (job_dir / "LOG0").symlink_to(outside)
    started.append(start_rank_like(job_dir))
    stack(job_dir)
    assert list(outside.iterdir()) == []
    (job_dir / "LOG0").unlink()
    write_job(job_dir, log_dir="..")
    stack(job_dir)
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == ["job"]


def test_status_escapes_control_characters_from_job_json(tmp_path):
    job_dir = tmp_path / "job"
    write_job(job_dir, job_id="j\x1b[2J\x1b]0;owned\x07", platform="CPU\r\x1b[31mred",
              hosts=[{"name": "h\x1b[1m", "local": True}], ranks=[{"rank": 0, "host": "h\x1b[1m", "log_dir": "LOG0"}],
              status={"state": "running\rDONE", "hang": {"message": "stuck\x1b[A\x9b2J"}})
    done = subprocess.run([*LAUNCH, "--status", str(job_dir)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert not any(c in done.stdout for c in "\x1b\r\x07\x9b")
    assert "j\\x1b[2J" in done.stdout and "running\\rDONE" in done.stdout and "stuck\\x1b[A" in done.stdout
