"""Every template rendered with hostile values in every field: bash -n, then run for real with canaries.

The values carry every shell metacharacter and command substitution there is, each
trying to create a canary file; the job dir even carries a newline in the render-only
case (the input checks refuse it, the renderer must still not let it end a comment).
The scripts are then run for real -- env.sh sourced, run.sh and the scheduler's script
exec'ing a fake interpreter that records its argv and environment, mpirun.sh under the
real mpirun -- and nothing may have run: no canary exists, and every value arrived
verbatim.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.errors import LaunchError
from launcher.job.plan import plan_job
from launcher.job.render import render_job
from launcher.job.resolve import LaunchOptions, resolve_spec

REPO = Path(__file__).resolve().parents[2]


def hostile(canary: Path) -> str:
    c = str(canary)
    return (f"a $(touch {c}1) `touch {c}2` ';touch {c}3;' \"$(touch {c}4)\" \\ ${{HOME}} $HOME * ? ~ # ! "
            f"{{x,y}} [ab] < > | & && || %s %n \t end")


FAKE_PYTHON = """#!/bin/bash
# Records how it was called: argv and the environment, one JSON file per call.
exec {python} -c 'import json, os, sys; json.dump({{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}, open(os.environ["RECORD_TO"], "w"))' "$@"
"""


@pytest.fixture
def world(tmp_path: Path):
    canary = tmp_path / "canary"
    fake = tmp_path / "fake python"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(0o755)
    hccn = tmp_path / "hccn.conf"
    hccn.write_text("address_0=192.168.30.1\naddress_1=192.168.30.2\n")
    entry = tmp_path / f"entry {hostile(canary).split(' end')[0].replace('/', '_')[:60]}.py"
    entry.write_text("print('entry')\n")
    yield {"tmp": tmp_path, "canary": canary, "fake": fake, "hccn": hccn, "entry": entry}
    assert not list(tmp_path.glob("canary*")), "a hostile value ran as a command"


def spec_for(world, mode: str, job_dir: Path):
    value = hostile(world["canary"])
    platform = {"dynamic": "CPU", "rank-table": "Ascend", "mpirun": "CPU"}[mode]
    options = LaunchOptions(
        platform=platform, mode=mode, devices=2, hccn_conf=world["hccn"], job_dir=job_dir, entry=world["entry"],
        python=str(world["fake"]), args=("--data-root", value, value, "--set", f"x={value}"),
        env=(("HOSTILE", value), ("RECORD_TO", "record.json"), ("MS_NODE_TIMEOUT", value)), bind_cores=False,
    )
    return resolve_spec(options, warn=lambda message: None)


@pytest.mark.parametrize("mode", ["dynamic", "rank-table", "mpirun"])
def test_hostile_values_in_every_field_render_parse_and_run_verbatim(world, mode):
    value = hostile(world["canary"])
    job_dir = world["tmp"] / f"job {mode} {value.split(' end')[0].replace('/', '_')[:80]}"
    spec = spec_for(world, mode, job_dir)
    files = render_job(plan_job(spec))
    job_dir.mkdir()
    for item in files:
        target = job_dir / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(item.text)
        target.chmod(0o755 if item.executable else 0o644)
        if item.path.endswith(".sh"):
            checked = subprocess.run(["bash", "-n", str(target)], capture_output=True, text=True)
            assert checked.returncode == 0, (item.path, checked.stderr)
        if item.path.endswith((".sh", "hostfile")):
            for line in item.text.splitlines():  # every line is a comment, blank, or shell the template wrote
                assert not line.lstrip().startswith(("touch", "$(", "`", "'", '"', "end")), (item.path, line)
    # For real: each rank's run.sh (env.sh sourced, the command exec'd) and the scheduler's script.
    scripts = [job_dir / f"LOG{rank}" / "run.sh" for rank in range(2)]
    if mode == "dynamic":
        scripts.append(job_dir / "scheduler" / "run.sh")
    for script in scripts:
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "RECORD_TO": str(script.parent / "record.json")})
        assert done.returncode == 0, (script, done.stderr, (script.parent / "log.txt").read_text())
        record = json.loads((script.parent / "record.json").read_text())
        assert record["env"]["HOSTILE"] == value and record["env"]["MS_NODE_TIMEOUT"] == value
        if script.parent.name.startswith("LOG"):
            assert record["argv"] == [str(world["entry"]), "--data-root", value, value, "--set", f"x={value}"]
            assert record["env"]["LAUNCH_TRAIN_JOB_DIR"] == str(job_dir)
    if mode == "mpirun" and shutil.which("mpirun"):
        done = subprocess.run(["bash", str(job_dir / "mpirun.sh")], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RECORD_TO": "record.json"})
        assert done.returncode == 0, done.stderr
        for rank in range(2):
            assert (job_dir / f"LOG{rank}" / "exit_status").read_text().strip() == "0"
    if mode == "rank-table":
        env_sh = (job_dir / "LOG0" / "env.sh").read_text()
        assert "# HCCL rank table start: device 0 is rank 0 in " in env_sh


def test_a_newline_that_got_past_the_checks_still_cannot_end_a_comment(world):
    """The issue's injection: rank-table mode, a newline in the job dir, a command after it."""
    spec = spec_for(world, "rank-table", world["tmp"] / "job")
    evil = Path(str(world["tmp"] / "job") + f"\ntouch {world['canary']}5\n# ")
    spec = dataclasses.replace(spec, job_dir=evil)  # bypassing the input checks on purpose
    plan = plan_job(spec)
    for item in render_job(plan):
        if item.path.endswith(".sh"):
            # The value may hold its newline inside single quotes (an export), never outside them:
            # bash -n here, sourcing below, and the canary check prove it.
            script = world["tmp"] / "check.sh"
            script.write_text(item.text)
            assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env_sh = next(f.text for f in render_job(plan) if f.path == "LOG0/env.sh")
    comment = next(line for line in env_sh.splitlines() if line.startswith("# HCCL rank table start"))
    assert f"\\ntouch {world['canary']}5\\n# " in comment  # shown escaped, inside the one comment line
    # Sourcing the env.sh runs nothing (the values are quoted, the comment stays a comment).
    (world["tmp"] / "env.sh").write_text(env_sh)
    subprocess.run(["bash", "-c", f"source {world['tmp'] / 'env.sh'}"], check=True)


@pytest.mark.parametrize("options, message", [
    (dict(job_dir=Path("/tmp/a\nb")), "--job-dir /tmp/a\\nb: contains a newline at position 6"),
    (dict(env=(("A\nB", "1"),)), "not a valid environment variable name"),
    (dict(env=(("A", "x\x00y"),)), "the value contains a NUL byte"),
    (dict(args=("--x", "a\x00b")), "contains a NUL byte"),
    (dict(hosts="localhost\n"), "--hosts localhost\\n: contains a newline"),
    (dict(sched_port=65536), "--sched-port 65536: not a TCP port (1..65535)"),
    (dict(max_restarts=10 ** 20), "--max-restarts 100000000000000000000: must be 0..1000"),
], ids=["job-dir-newline", "env-key-newline", "env-value-nul", "arg-nul", "hosts-newline", "port", "restarts"])
def test_values_that_cannot_be_represented_are_refused_by_the_library_call_too(options, message):
    with pytest.raises(LaunchError) as err:
        LaunchOptions(platform="CPU", **options)
    assert message in str(err.value) and "\n" not in str(err.value)
