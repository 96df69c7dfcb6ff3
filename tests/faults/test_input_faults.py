"""launch-train on bad numbers, bad job dirs, an early Ctrl-C and a full disk: one line, nothing half-kept.

Every case runs the real program. "Nothing half-kept": no job dir, or a whole one whose
job.json says how the job ended, and no hidden staging dir left beside it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


from tests.faults.conftest import assert_no_job_process

REPO = Path(__file__).resolve().parents[2]
LAUNCH = [sys.executable, "-m", "launcher.cli"]
SLEEPER = "import time\nprint('epoch: 1 step: 1, loss is 0.5', flush=True)\ntime.sleep(600)\n"
FILLER = """\
import os, sys
print("epoch: 1 step: 1, loss is 0.5", flush=True)
if os.environ["RANK_ID"] == "1":
    with open("ckpt.part", "wb") as out:  # a checkpoint bigger than the disk
        while True:
            out.write(b"\\0" * (1 << 16))
import time
time.sleep(600)
"""


def run_launch(args: list[str], timeout_s: float = 120, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([*LAUNCH, *args], capture_output=True, text=True, timeout=timeout_s, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def leftovers_beside(job_dir: Path) -> list[str]:
    return [p.name for p in job_dir.parent.iterdir() if ".partial-" in p.name] if job_dir.parent.exists() else []


@pytest.fixture
def hccn(tmp_path: Path) -> Path:
    path = tmp_path / "hccn.conf"
    path.write_text("address_0=192.168.30.1\naddress_1=192.168.30.2\n")
    return path


@pytest.mark.parametrize("flags, message", [
    (["--sched-port", "65536"], "--sched-port 65536: not a TCP port (1..65535)"),
    (["--sched-port", "0"], "--sched-port 0: not a TCP port"),
    (["--devices", "1000000000000"], "--devices 1000000000000: at most 1024 ranks per host"),
    (["--visible-devices", "0-99999999999"], "expected device ids like 0,1,2 or 0-3"),
    (["--visible-devices", "0-70000"], "device id 70000 is above 65535"),
    (["--visible-devices", "0-5000"], "more than 1024 devices on one host"),
    (["--tee", "0-99999999999"], "is not a range of ranks"),
    (["--max-restarts", "99999999999999999999"], "must be 0..1000"),
    (["--status-interval", "nan"], "--status-interval nan: must be a number of seconds"),
    (["--status-interval", "-1"], "--status-interval -1.0"),
    (["--hang-timeout", "inf"], "--hang-timeout inf: must be a number of seconds"),
    (["--first-step-timeout", "-3"], "--first-step-timeout -3.0"),
    (["--hang-timeout", "nan"], "--hang-timeout nan"),
], ids=["port-65536", "port-0", "devices-huge", "visible-huge", "visible-id", "visible-many", "tee-huge",
        "restarts-huge", "interval-nan", "interval-negative", "hang-inf", "first-step-negative", "hang-nan"])
def test_numbers_out_of_range_are_one_line_exit_2(tmp_path: Path, flags, message):
    job_dir = tmp_path / "job"
    done = run_launch(["--platform", "CPU", "--job-dir", str(job_dir), *flags])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("launch-train: error: ") and message in done.stderr, done.stderr
    assert not job_dir.exists()


@pytest.mark.parametrize("line, message", [
    ("127.0.0.2 slots=99999", "slots=99999 is more than 1024 ranks on one host"),
    ("127.0.0.2:" + "9" * 5000, "is not a number"),
    ("127.0.0.2 slots=" + "9" * 5000, "is more than 1024 ranks on one host"),
    ("127.0.0.2\x1b[2J", "is not a host name or IP address"),
], ids=["slots-huge", "port-5000-digits", "slots-5000-digits", "escape-in-host"])
def test_bad_hostfile_numbers_and_names_are_one_line(tmp_path: Path, line, message):
    hostfile = tmp_path / "hosts"
    hostfile.write_text(line + "\n")
    done = run_launch(["--hostfile", str(hostfile), "--platform", "CPU", "--job-dir", str(tmp_path / "job"), "--dry-run"])
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
    assert "\x1b" not in done.stderr


def test_a_job_dir_too_long_in_the_way_or_read_only_is_one_line(tmp_path: Path, small_mount):
    cases = [
        (tmp_path / ("x" * 300), "too long"),
        (Path("/" + "/".join(["y" * 200] * 25)), "too long"),
    ]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cases.append((blocker / "job", f"{blocker} is a file, not a directory"))
    read_only = small_mount("ro", "1m", read_only=True)
    cases.append((read_only / "job", f"{read_only} is not writable"))
    for job_dir, message in cases:
        done = run_launch(["--platform", "CPU", "--job-dir", str(job_dir), "--", "--help"])
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([*LAUNCH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            stdin=subprocess.DEVNULL)


# The program's own code runs from about 0.1 s on an idle machine (a SIGINT is noted from
# its first line); before that the interpreter is still importing its site packages, which
# no program can guard, and on a loaded 2-core machine that takes longer: start at 0.25 s.
@pytest.mark.parametrize("delay_s", [0.25, 0.35, 0.5, 0.8])
def test_ctrl_c_in_the_first_moments_is_one_line_and_keeps_nothing_half_made(tmp_path: Path, hccn, delay_s):
    payload = tmp_path / "sleeper.py"
    payload.write_text(SLEEPER)
    job_dir = tmp_path / "job"
    proc = _start(["--job-dir", str(job_dir), "--platform", "Ascend", "--hccn-conf", str(hccn), "--devices", "2",
                   "--entry", str(payload), "--tee", "none"])
    time.sleep(delay_s)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert not leftovers_beside(job_dir)
    if job_dir.exists():  # then whole, and it says it was interrupted
        assert json.loads((job_dir / "job.json").read_text())["status"]["state"] == "interrupted"
        assert (job_dir / "LOG1" / "run.sh").is_file()
    else:
        assert err.strip().splitlines()[-1].startswith("launch-train: interrupted before the job started")
    assert_no_job_process(job_dir)


@pytest.fixture
def small_mount(tmp_path: Path):
    """Tiny tmpfs file systems under tmp_path (root only), unmounted at the end."""
    mounted: list[Path] = []

    def make(name: str, size: str, read_only: bool = False) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system needs root")
        path = tmp_path / name
        path.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield make
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_disk_too_small_for_the_job_dir_keeps_nothing_and_the_rerun_works(tmp_path: Path, hccn, small_mount):
    disk = small_mount("disk", "64k")  # the rendered files fit, the job.json reserve does not
    payload = tmp_path / "sleeper.py"
    payload.write_text("print('epoch: 1 step: 1, loss is 0.5')\n")
    job_dir = disk / "job"
    args = ["--job-dir", str(job_dir), "--platform", "Ascend", "--hccn-conf", str(hccn), "--devices", "2",
            "--entry", str(payload), "--tee", "none"]
    done = run_launch(args)
    assert done.returncode == 1, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "No space left on device; nothing was kept" in done.stderr
    assert str(job_dir) in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in disk.iterdir()) == []  # no job dir, no staging dir
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
    again = run_launch(args)
    assert again.returncode == 0, again.stderr
    assert json.loads((job_dir / "job.json").read_text())["status"]["state"] == "succeeded"
    assert not (job_dir / ".job.json.reserve").exists()


def test_a_rank_that_fills_the_disk_is_named_with_the_path_and_job_json_is_finalised(tmp_path: Path, hccn,
                                                                                      small_mount):
    disk = small_mount("disk", "2m")
    payload = tmp_path / "filler.py"
    payload.write_text(FILLER)
    job_dir = disk / "job"
    done = run_launch(["--job-dir", str(job_dir), "--platform", "Ascend", "--hccn-conf", str(hccn), "--devices", "2",
                       "--entry", str(payload), "--tee", "none", "--hang-timeout", "60"])
    assert "Traceback" not in done.stderr.split("last lines of")[0]
    assert done.returncode == 1, done.stderr
    status = json.loads((job_dir / "job.json").read_text())["status"]
    # Rank 1 fills the disk; rank 0 may fail first, when its own next log line no longer fits.
    first = status["first_failure"]["rank"]
    assert first in (0, 1)
    assert f"rank {first} on" in done.stderr and f"the file system of {job_dir / f'LOG{first}'} is full" in done.stderr
    assert status["state"] == "failed" and status["ended"] and "is full" in status["first_failure"]["note"]
    assert_no_job_process(job_dir)


@pytest.mark.parametrize("flags, message", [
    (["--job-dir", "/tmp/job\ntouch /tmp/owned"], "--job-dir /tmp/job\\ntouch /tmp/owned: contains a newline"),
    (["--env", "A\nB=1"], "not a valid environment variable name"),
    (["--env", "PATH_\x1b=1"], "not a valid environment variable name"),
    (["--hosts", "localhost\n"], "contains a newline"),
    (["--hosts", "root@127.0.0.2", "--master-addr", "10.0.0.1\n# x"], "--master-addr 10.0.0.1\\n# x: contains a newline"),
    (["--hosts", "root@127.0.0.2", "--master-addr", "10.0.0.1;reboot"], "not a host name or IP address"),
    (["--submit", "slurm", "--nodes", "1", "--job-dir", "/tmp/j\n#SBATCH x"], "--job-dir /tmp/j\\n#SBATCH x: contains a newline"),
], ids=["job-dir-newline", "env-key-newline", "env-key-escape", "hosts-newline", "master-addr-newline",
        "master-addr-semicolon", "submit-job-dir-newline"])
def test_control_characters_are_refused_with_one_line(tmp_path: Path, flags, message):
    done = run_launch(["--platform", "CPU", *flags, "--dry-run"])
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr
    assert not Path("/tmp/owned").exists()


def test_a_rank_table_with_a_5000_digit_number_is_one_line(tmp_path: Path):
    table = tmp_path / "table.json"
    table.write_text('{"version": "1.0", "server_count": "1", "server_list": [], "status": ' + "9" * 5000 + "}")
    done = run_launch(["--platform", "Ascend", "--rank-table", str(table), "--job-dir", str(tmp_path / "job")])
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "a number with 5000 digits is out of range" in done.stderr
    assert not (tmp_path / "job").exists()
