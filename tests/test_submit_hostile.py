"""Hostile values in --submit slurm: what real sbatch reads from the script, and the one-line refusals.

sbatch reads #PBS/#BSUB directives on any line of a batch script and backslashes in #SBATCH lines
even inside quotes (measured: Slurm 22.05, "Batch scripts are not read like shell"), so these tests ask
the real sbatch (`-vvv` prints what it parsed, no controller needed) rather than our idea of it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH_TRAIN = str(Path(sys.executable).parent / "launch-train")
EVIL = "x\n#PBS -N evil -q evilq -o /tmp/evil-out #\n#BSUB -J evil2\n#SBATCH --job-name=evil3"

needs_sbatch = pytest.mark.skipif(shutil.which("sbatch") is None, reason="sbatch not installed (make system-deps)")


def sbatch_parse(script: Path, tmp_path: Path) -> str:
    """What `sbatch -vvv` says it read from script (up to its options table; the submit itself is cut off)."""
    conf = tmp_path / "slurm.conf"
    # A controller on a port where nothing listens: sbatch parses, prints its options, then retries.
    conf.write_text("ClusterName=parse\nSlurmctldHost=localhost\nSlurmctldPort=9\nNodeName=n1 CPUs=1\n"
                    "PartitionName=debug Nodes=n1\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    proc = subprocess.Popen(["sbatch", "-vvv", str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if "end of defined options" in line or "fatal" in line:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return "".join(lines)


def submit_dry_run(tmp_path: Path, *args: str, training=("--note", EVIL)) -> subprocess.CompletedProcess:
    return subprocess.run([LAUNCH_TRAIN, "--submit", "slurm", "--dry-run", "--platform", "CPU",
                           "--job-dir", str(tmp_path / "job"), *args, "--", *training],
                          capture_output=True, text=True, timeout=60)


@needs_sbatch
def test_an_injected_pbs_line_in_a_training_arg_or_env_value_sets_nothing_in_real_sbatch(tmp_path):
    done = submit_dry_run(tmp_path, "--env", "NOTE=" + EVIL, "--partition", "debug")
    assert done.returncode == 0, done.stderr
    script = tmp_path / "submit.sbatch"
    script.write_text(done.stdout)
    parsed = sbatch_parse(script, tmp_path)
    assert "end of defined options" in parsed, parsed
    assert "evil" not in parsed, parsed
    assert "partition           : debug" in parsed
    assert not any(line.startswith(("#PBS", "#BSUB", "#SBATCH --job-name=evil")) for line in done.stdout.splitlines())
    # and bash still gets the value back exactly: the script's exec line, run through bash with echo instead.
    exec_line = next(line for line in done.stdout.splitlines() if line.startswith("exec "))
    printed = subprocess.run(["bash", "-c", "set -- " + exec_line.removeprefix("exec ") + '; printf "%s" "${@: -1}"'],
                             capture_output=True).stdout.decode()
    assert printed == EVIL


@needs_sbatch
def test_real_sbatch_reads_a_pbs_line_inside_single_quotes(tmp_path):
    # The same value quoted the old way ('...' with a raw newline) does set sbatch's options here:
    # this is what the test above guards against.
    import shlex

    script = tmp_path / "old.sbatch"
    script.write_text(f"#!/usr/bin/env bash\n#SBATCH --partition=debug\nexec echo {shlex.quote(EVIL)}\n")
    assert "job-name            : evil" in sbatch_parse(script, tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--time", "30\n"], "--time '30\\n': use Slurm's formats"),
    (["--time", "３０"], "--time '３０': use Slurm's formats"),
    (["--partition", "p\\x"], "--partition p\\x: contains a backslash"),
    (["--account", "a\\"], "--account a\\: contains a backslash"),
    (["--slurm-arg=--comment=a\\b"], "--slurm-arg --comment=a\\b: contains a backslash"),
    (["--slurm-arg=--comment=a\x1bb"], "--slurm-arg --comment=a\\x1bb: contains an escape"),
    (["--nodes", "1" * 30], "argument --nodes: " + "1" * 20 + "...: must be 1..100000"),
    (["--nodes", "３"], "argument --nodes: ３: not a whole number"),
    (["--devices", "0"], "--devices 0: must be at least 1"),
    (["--devices", "２"], "argument --devices: ２: not a whole number"),
    (["--sched-port", "0"], "--sched-port 0: not a TCP port"),
    (["--max-restarts", "３"], "argument --max-restarts: ３: not a whole number"),
])
def test_bad_submit_values_are_one_line_and_write_nothing(tmp_path, args, message):
    done = submit_dry_run(tmp_path, *args, training=())
    assert done.returncode == 2, done.stdout
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("args, message", [(["--devices", "0"], "--devices 0: must be at least 1"),
                                           (["--sched-port", "0"], "--sched-port 0: not a TCP port (1..65535)")])
def test_k8s_submit_refuses_devices_0_and_sched_port_0_instead_of_defaults(tmp_path, args, message):
    done = subprocess.run([LAUNCH_TRAIN, "--submit", "k8s", "--k8s-kind", "volcano", "--image", "img",
                           "--platform", "CPU", "--dry-run", "--job-dir", str(tmp_path / "job"), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr == f"launch-train: error: {message}\n", done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("flag", ["--submit slurm", "--submit k8s --k8s-kind volcano --image img", ""])
def test_a_non_utf8_training_argument_is_one_line_and_writes_nothing(tmp_path, flag):
    job_dir = tmp_path / "job"
    argv = [os.fsencode(LAUNCH_TRAIN), *(w.encode() for w in flag.split()), b"--platform", b"CPU",
            b"--job-dir", os.fsencode(job_dir), b"--", b"--note", b"caf\xe9"]
    done = subprocess.run(argv, capture_output=True, timeout=60, cwd=tmp_path)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, stderr
    assert len(stderr.splitlines()) == 1 and "training argument caf\\xe9: not valid UTF-8" in stderr, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.iterdir())


@pytest.mark.parametrize("flag", ["--job-dir", "--hosts", "--entry", "--env"])
def test_a_non_utf8_option_of_a_local_launch_is_one_line_and_writes_nothing(tmp_path, flag):
    value = b"NOTE=caf\xe9" if flag == "--env" else os.fsencode(tmp_path) + b"/caf\xe9"
    argv = [os.fsencode(LAUNCH_TRAIN), b"--platform", b"CPU", b"--devices", b"1",
            *([] if flag == "--job-dir" else [b"--job-dir", os.fsencode(tmp_path / "job")]),
            flag.encode(), value, b"--", b"x"]
    done = subprocess.run(argv, capture_output=True, timeout=60, cwd=tmp_path)
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and len(stderr.splitlines()) == 1, stderr
    assert "not valid UTF-8" in stderr and "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == []


def test_a_failed_sbatch_leaves_the_job_dir_free_for_the_same_submission_again(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    fake.write_text("#!/bin/sh\n"
                    "echo 'sbatch: error: Batch job submission failed: Invalid partition name specified' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    job_dir = tmp_path / "job"
    for _attempt in range(2):
        done = subprocess.run([LAUNCH_TRAIN, "--submit", "slurm", "--partition", "nope", "--platform", "CPU",
                               "--job-dir", str(job_dir)], capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 2
        assert done.stderr.strip().endswith("Batch job submission failed: Invalid partition name specified"), \
            done.stderr
        assert "not empty" not in done.stderr and not job_dir.exists()
    job_dir.mkdir()  # a job dir the user made stays, empty
    done = subprocess.run([LAUNCH_TRAIN, "--submit", "slurm", "--platform", "CPU", "--job-dir", str(job_dir)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and job_dir.is_dir() and list(job_dir.iterdir()) == []


def test_every_rendered_shell_word_is_one_line_and_bash_reads_it_back_exactly():
    from launcher.job.render import shquote

    nasty = "".join(map(chr, range(1, 32))) + "\x7f\x85\x9b it's \\ \"q\" $(x) `y` é\u2028\U0001F600"
    for value in (nasty, "a\n#PBS -N evil", "\r", "plain", "it's"):
        word = shquote(value)
        assert "\n" not in word and "\r" not in word and "\x85" not in word
        printed = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True).stdout
        assert printed.decode("utf-8") == value
