"""What every fault test checks besides its own outcome: no process left, nothing lost or half-kept.

``no_leftover_processes`` (autouse): the test's new descendants and every process that
mentions its tmp_path are gone when it ends (given a few seconds: an sshd session
winds down after its client closed). The process table is taken before the test
(after the session fixtures started) and compared after it.

Helpers: ``tree_state(root)`` describes every entry under root without following a
link (kind, size, sha256 / link target), so a before/after comparison proves that no
source file was changed, lost or followed; ``one_line_error`` runs a real command line
and returns its exit status and its single stderr line.
"""
from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.fixtures.jobs import descendant_pids, live_descendants, processes_mentioning

BIN = Path(sys.executable).parent
SETTLE_S = 5.0


@pytest.fixture(autouse=True)
def no_leftover_processes(tmp_path: Path):
    before = descendant_pids()
    yield
    deadline = time.monotonic() + SETTLE_S
    while True:
        new = [p for p in live_descendants() if p.pid not in before]
        mentioning = processes_mentioning(str(tmp_path))
        if not new and not mentioning:
            return
        if time.monotonic() > deadline:
            described = []
            for proc in new + mentioning:
                try:
                    described.append((proc.pid, proc.cmdline()))
                except psutil.Error:
                    continue
            if described:
                pytest.fail(f"processes left behind: {described}")
            return
        time.sleep(0.1)


def assert_no_job_process(job_dir: Path, wait_s: float = 10.0) -> None:
    """No process anywhere names the job dir (environment or argv); new descendants are the autouse check's."""
    deadline = time.monotonic() + wait_s
    while processes_mentioning(str(job_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = []
    for proc in processes_mentioning(str(job_dir)):
        try:
            left.append((proc.pid, proc.cmdline()))
        except psutil.Error:
            continue
    assert not left, left


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under root -> (kind, size or target, sha256); links are described, not followed."""
    state: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(path), None)
            elif stat.S_ISREG(st.st_mode):
                state[rel] = ("file", st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                state[rel] = ("dir", None, None)
            else:
                state[rel] = ("special", stat.S_IFMT(st.st_mode), None)
    return state


def one_line_error(args: list[str], timeout_s: float = 60.0, **kwargs) -> tuple[int, str, str]:
    """Run BIN/args[0] with args[1:]; (exit status, stdout, stderr); asserts stderr is one line, no traceback."""
    done = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL, **kwargs)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return done.returncode, done.stdout, lines[0]


NO_SFTP_ADDRESS = "127.0.0.5"


@pytest.fixture
def no_sftp_host(sshd_hosts, tmp_path: Path):
    """One more real sshd (127.0.0.5) whose config has no 'Subsystem sftp' line; same client key."""
    from tests.fixtures.sshd import SSHD, _free_port, _keygen, _sshd_config, _wait_listening

    workdir = tmp_path / "no-sftp-sshd"
    workdir.mkdir()
    host_key = _keygen(workdir / "ssh_host_ed25519_key", "host without sftp")
    port = _free_port(NO_SFTP_ADDRESS)
    config = _sshd_config(NO_SFTP_ADDRESS, port, host_key, sshd_hosts.workdir / "authorized_keys", workdir / "sshd.pid")
    config = "\n".join(line for line in config.splitlines() if not line.startswith("Subsystem")) + "\n"
    (workdir / "sshd_config").write_text(config)
    log = workdir / "sshd.log"
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(workdir / "sshd_config"), "-E", str(log)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_listening(proc, NO_SFTP_ADDRESS, port, log)
        yield {"address": NO_SFTP_ADDRESS, "port": port, "user": "root", "key": sshd_hosts.client_key}
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait(timeout=10)
