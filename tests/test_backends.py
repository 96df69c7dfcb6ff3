"""Backends and the library entry: run_job, select_backend, a backend added in one file, to_argv, no abbreviations."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.backends import LAUNCHERS, select_backend
from launcher.backends.local import LocalBackend
from launcher.errors import LaunchError
from launcher.job.arguments import parse_command_line
from launcher.job.options import LaunchOptions, SubmitOptions
from launcher.run_job import run_job
from tests.examples.fanout_backend import FanoutBackend

REPO = Path(__file__).resolve().parents[1]
PAYLOAD = str(REPO / "tests" / "payloads" / "rank_behaviour.py")
LAUNCH_TRAIN = str(Path(sys.executable).parent / "launch-train")


def test_a_new_backend_is_one_file_and_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(LAUNCHERS, "fanout", lambda options, environ: FanoutBackend())  # the one line
    options = LaunchOptions(launcher="fanout", platform="CPU", devices=3, entry=Path(PAYLOAD), job_dir=tmp_path / "job",
                            tee="none", args=("--steps", "2"))
    assert isinstance(select_backend(options), FanoutBackend)
    result = run_job(options)
    assert result.exit_code == 0 and result.state == "succeeded", result
    job = json.loads((tmp_path / "job" / "job.json").read_text())
    assert job["status"]["state"] == "succeeded"
    for rank in range(3):
        record = json.loads((tmp_path / "job" / f"LOG{rank}" / "record.json").read_text())
        assert record["env"]["RANK_ID"] == str(rank)
        assert (tmp_path / "job" / f"LOG{rank}" / "exit_status").read_text().strip() == "0"
    dry = run_job(LaunchOptions(launcher="fanout", platform="CPU", devices=2, entry=Path(PAYLOAD), dry_run=True,
                                job_dir=tmp_path / "dry"))
    assert dry.exit_code == 0 and "fanout: bash" in capsys.readouterr().out and not (tmp_path / "dry").exists()


def test_a_new_backend_fails_fast_and_names_the_rank(tmp_path, monkeypatch):
    monkeypatch.setitem(LAUNCHERS, "fanout", lambda options, environ: FanoutBackend())
    result = run_job(LaunchOptions(launcher="fanout", platform="CPU", devices=2, entry=Path(PAYLOAD), tee="none",
                                   job_dir=tmp_path / "job",
                                   args=("--steps", "2", "--step-time", "0.1", "--fail-rank", "1", "--exit-code", "7")))
    assert result.exit_code == 7 and result.first_failure is not None and result.first_failure.rank == 1


def test_run_job_from_python_without_argv(tmp_path):
    result = run_job(LaunchOptions(platform="CPU", devices=2, entry=Path(PAYLOAD), job_dir=tmp_path / "job",
                                   tee="none", args=("--steps", "1")))
    assert result.succeeded and result.plan is not None and result.plan.rank_size == 2
    assert result.job_dir == (tmp_path / "job").resolve()


def test_select_backend_by_options_and_environment(tmp_path):
    from launcher.backends.k8s_pod import K8sPodBackend
    from launcher.backends.ssh import SshBackend
    from launcher.backends.submit import K8sSubmit, SlurmSubmit

    assert isinstance(select_backend(LaunchOptions(), {}), LocalBackend)
    assert isinstance(select_backend(LaunchOptions(hosts="localhost", launcher="ssh"), {}), LocalBackend)
    assert isinstance(select_backend(LaunchOptions(hosts="127.0.0.9"), {}), SshBackend)
    assert isinstance(select_backend(LaunchOptions(from_env=True), {}), K8sPodBackend)
    assert isinstance(select_backend(LaunchOptions(submit=SubmitOptions("slurm")), {}), SlurmSubmit)
    assert isinstance(select_backend(LaunchOptions(submit=SubmitOptions("k8s")), {}), K8sSubmit)
    with pytest.raises(LaunchError, match="--launcher local: --hosts/--hostfile name other machines"):
        select_backend(LaunchOptions(launcher="local", hosts="127.0.0.9"), {})


ROUND_TRIPS = [
    LaunchOptions(),
    LaunchOptions(platform="CPU", devices=2, args=("--config", "tiny_synthetic", "--x=-1", "--", "it's")),
    LaunchOptions(visible_devices=(0, 1, 4), env=(("A", "1"), ("B", "-x y=z")), bind_cores=False, topology_check=False,
                  hang_timeout_s=None, first_step_timeout_s=12.5, status_interval_s=0.1, max_restarts=3, tee="all"),
    LaunchOptions(hosts="a,b:2222,user@c", master_addr="10.0.0.1", ssh_timeout_s=3.0, ssh_accept_unknown_host_keys=True,
                  python="/opt/py/bin/python", heartbeat_timeout_s=7.0, launcher="ssh", sched_port=8118,
                  module="my.trainer", job_dir=Path("/tmp/j -x"), job_id="20260101-000000-abcdef", from_submit=True),
    LaunchOptions(from_env=True, k8s_kind="msjob", rank_table_timeout_s=0.0, mode="dynamic",
                  hccn_conf=Path("/etc/{host}/hccn.conf"), entry=Path("-odd name.py"), templates=Path("tpl")),
]


@pytest.mark.parametrize("options", ROUND_TRIPS)
def test_to_argv_is_the_inverse_of_the_parser(options):
    assert parse_command_line(options.to_argv()).options == options


def test_to_argv_never_carries_submit_or_dry_run():
    words = LaunchOptions(submit=SubmitOptions("slurm", nodes=2, partition="p"), dry_run=True, json=True).to_argv()
    assert words == ["--"]


@pytest.mark.parametrize("argv, message", [
    (["--sub", "slurm"], "unrecognized arguments: --sub slurm"),
    (["--dry"], "unrecognized arguments: --dry"),
    (["--dev", "2"], "unrecognized arguments: --dev 2"),
])
def test_abbreviations_are_one_line_exit_2(argv, message, tmp_path):
    done = subprocess.run([LAUNCH_TRAIN, *argv, "--job-dir", str(tmp_path / "job")], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("command", [["gen-rank-table", "check", "--tab", "x"], ["collect-results", "--out", "x"],
                                     ["deeplab-synth", "--ou", "x"]])
def test_other_tools_refuse_abbreviations_too(command, tmp_path):
    tool = str(Path(sys.executable).parent / command[0])
    done = subprocess.run([tool, *command[1:]], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert not any(tmp_path.iterdir())


def test_every_parser_of_the_project_refuses_abbreviations():
    """Source check beside the behaviour above: each ArgumentParser is made with allow_abbrev=False."""
    offenders = []
    for path in [*REPO.glob("launcher/**/*.py"), *REPO.glob("deeplab/**/*.py"), *REPO.glob("hccl/*.py"),
                 *REPO.glob("bench/*.py"), *REPO.glob("tests/payloads/*.py")]:
        for match in re.finditer(r"argparse\.ArgumentParser\(([^)]*)\)", path.read_text()):
            if "allow_abbrev=False" not in match.group(1):
                offenders.append(f"{path.relative_to(REPO)}: {match.group(0)[:60]}")
        if re.search(r"class \w+\(argparse\.ArgumentParser\)", path.read_text()) and \
                'setdefault("allow_abbrev", False)' not in path.read_text():
            offenders.append(f"{path.relative_to(REPO)}: parser class without allow_abbrev=False")
    assert not offenders, offenders


def test_launcher_cli_is_thin():
    """launch-train's main is argv -> options -> run_job: the module is its manual plus a few lines."""
    source = (REPO / "launcher" / "cli.py").read_text()
    code = source[source.index('"""\nfrom __future__') + 4:]
    lines = [line for line in code.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= 120, len(lines)
    assert "run_job(" in code and "argparse" not in code
