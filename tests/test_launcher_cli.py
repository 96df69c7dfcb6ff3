"""launch-train's command line: --dry-run output, and every bad input -> one line, exit 2, nothing written."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = REPO / "tests" / "payloads" / "rank_behaviour.py"
LAUNCH = [sys.executable, "-m", "launcher.cli"]


def run_cli(*args: str, env=None, cwd=None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd or REPO)


@pytest.fixture()
def fake_hccn_conf(tmp_path: Path) -> Path:
    path = tmp_path / "hccn.conf"
    path.write_text("".join(f"address_{d}=192.168.20.{d + 1}\nnetmask_{d}=255.255.255.0\n" for d in range(8)))
    return path


def test_dry_run_json_shows_the_exact_environment_every_rank_gets(tmp_path: Path):
    job_dir = tmp_path / "job"
    done = run_cli("--platform", "CPU", "--devices", "2", "--job-dir", str(job_dir), "--env", "A=b c",
                   "--sched-port", str(_free_port()), "--dry-run", "--json", "--",
                   "--config", "tiny_synthetic", "--weird arg", "$(touch /tmp/pwned)")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert not job_dir.exists()  # a dry run writes nothing
    assert plan["schema"] == 1 and plan["mode"] == "dynamic" and plan["rank_size"] == 2
    assert plan["status"]["state"] == "planned"
    assert plan["args"] == ["--config", "tiny_synthetic", "--weird arg", "$(touch /tmp/pwned)"]
    for rank in plan["ranks"]:
        env = rank["env"]
        assert env["MS_ROLE"] == "MS_WORKER" and env["MS_NODE_ID"] == str(rank["rank"]) and env["A"] == "b c"
        env_sh = plan["files"][f"LOG{rank['rank']}/env.sh"]
        # env.sh exports exactly the variables the plan lists, nothing more or less.
        exported = _source_and_dump(env_sh, tmp_path)
        assert exported == env
        assert rank["command"][-4:] == ["--config", "tiny_synthetic", "--weird arg", "$(touch /tmp/pwned)"]
    assert "scheduler/run.sh" in plan["files"]
    assert plan["scheduler"]["port"] == int(plan["ranks"][0]["env"]["MS_SCHED_PORT"])


def test_dry_run_text_lists_every_rank_and_file(tmp_path: Path, fake_hccn_conf: Path):
    done = run_cli("--platform", "Ascend", "--hccn-conf", str(fake_hccn_conf), "--visible-devices", "4-7",
                   "--job-dir", str(tmp_path / "j"), "--dry-run", "--", "--config", "voc_r101_os16")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for rank in range(4):
        assert f"rank {rank}: host" in out and f"---- LOG{rank}/run.sh (executable) ----" in out
    assert "RANK_TABLE_FILE=" in out and "---- rank_table.json ----" in out and '"device_ip": "192.168.20.5"' in out
    assert "rank-table start" in out


def _source_and_dump(env_sh: str, tmp_path: Path) -> dict:
    script = tmp_path / "env.sh"
    script.write_text(env_sh)
    clean = {"PATH": os.environ["PATH"]}
    before = _bash_env("true", clean)
    after = _bash_env(f"source {script}", clean)
    return {k: v for k, v in after.items() if before.get(k) != v}


def _bash_env(command: str, env: dict) -> dict:
    out = subprocess.run(["bash", "-c", f"{command} && env -0"], capture_output=True, env=env, check=True).stdout
    pairs = (item.split(b"=", 1) for item in out.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs if k not in (b"_", b"SHLVL", b"PWD")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bad(tmp_path: Path, *args: str, env=None, expect: str) -> None:
    job_dir = tmp_path / "job"
    done = run_cli("--job-dir", str(job_dir), *args, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("launch-train: error: ") and expect in lines[0], lines[0]
    assert "Traceback" not in done.stderr
    assert not job_dir.exists() or not any(job_dir.iterdir())


def test_unknown_platform(tmp_path):
    _bad(tmp_path, "--platform", "TPU", expect="--platform 'TPU': unknown platform")


def test_unknown_mode(tmp_path):
    _bad(tmp_path, "--platform", "CPU", "--mode", "slurm", expect="--mode")


def test_rank_table_mode_is_for_ascend(tmp_path):
    _bad(tmp_path, "--platform", "CPU", "--mode", "rank-table", expect="rank tables are for Ascend")


def test_zero_devices(tmp_path):
    _bad(tmp_path, "--platform", "CPU", "--devices", "0", expect="--devices 0: must be at least 1")


def _tool(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text("#!/bin/sh\n" + script)
    (bin_dir / name).chmod(0o755)


def test_gpus_that_are_not_there(tmp_path):
    _tool(tmp_path / "bin", "nvidia-smi", "echo 'No devices were found'; exit 6\n")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    _bad(tmp_path, "--platform", "GPU", "--devices", "2", env=env, expect="no GPU devices found")


def test_platform_detection(tmp_path, monkeypatch):
    from launcher.job.platforms import detect_platform

    bin_dir = tmp_path / "bin"
    _tool(bin_dir, "nvidia-smi", "echo 'No devices were found'; exit 6\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    missing_conf = tmp_path / "no-hccn.conf"
    assert detect_platform(missing_conf) == "CPU"
    _tool(bin_dir, "nvidia-smi", "echo 'GPU 0: Fake (UUID: GPU-0)'\n")
    assert detect_platform(missing_conf) == "GPU"
    conf = tmp_path / "hccn.conf"
    conf.write_text("address_0=10.0.0.1\n")
    assert detect_platform(conf) == "Ascend"
    conf.unlink()
    _tool(bin_dir, "npu-smi", "exit 0\n")
    assert detect_platform(missing_conf) == "Ascend"


def test_more_ascend_devices_than_hccn_conf_lists(tmp_path, fake_hccn_conf):
    _bad(tmp_path, "--platform", "Ascend", "--hccn-conf", str(fake_hccn_conf), "--visible-devices", "6-9",
         expect="device(s) 8,9 not available")


def test_invalid_ascend_topology(tmp_path, fake_hccn_conf):
    # 3 devices on one server is not a valid HCCL topology.
    _bad(tmp_path, "--platform", "Ascend", "--hccn-conf", str(fake_hccn_conf), "--devices", "3",
         expect="launch-train: error:")


def test_missing_hccn_conf(tmp_path):
    _bad(tmp_path, "--platform", "Ascend", "--hccn-conf", str(tmp_path / "nope.conf"), expect="--hccn-conf")


def test_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _bad(tmp_path, "--platform", "CPU", "--sched-port", str(port), "--entry", str(PAYLOAD),
             expect=f"--sched-port {port}: port already in use")


def test_missing_entry_script(tmp_path):
    _bad(tmp_path, "--platform", "CPU", "--entry", str(tmp_path / "train.py"), expect="no such file")


def test_template_with_an_undefined_variable(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "run.sh.j2").write_text("#!/bin/bash\nexec {{ rank.comand | join(' ') }}\n")
    _bad(tmp_path, "--platform", "CPU", "--entry", str(PAYLOAD), "--templates", str(templates),
         expect="run.sh.j2")


def test_job_dir_that_is_not_empty(tmp_path):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "keep.txt").write_text("mine")
    done = run_cli("--job-dir", str(job_dir), "--platform", "CPU", "--entry", str(PAYLOAD))
    assert done.returncode == 2 and "already exists and is not empty" in done.stderr
    assert sorted(p.name for p in job_dir.iterdir()) == ["keep.txt"]


def test_remote_host_without_ssh_support_is_explained(tmp_path):
    _bad(tmp_path, "--platform", "CPU", "--hosts", "localhost,gpu-node-7.example", expect="gpu-node-7.example")


def test_bad_env_and_json_without_dry_run(tmp_path):
    _bad(tmp_path, "--platform", "CPU", "--env", "NOVALUE", expect="--env 'NOVALUE': expected KEY=VALUE")
    _bad(tmp_path, "--platform", "CPU", "--json", expect="--json: only with --dry-run")


@pytest.mark.parametrize("args", [["--help"], ["--platform", "CPU", "--devices", "2", "--dry-run", "--json"]])
def test_the_launcher_never_imports_mindspore(args):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "launcher.cli", *args],
                          capture_output=True, text=True, timeout=30, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "launcher.job.platforms" in imported  # launcher.cli itself runs as __main__
    assert not any(name.split(".")[0] == "mindspore" for name in imported)
