"""Nothing a rank starts outlives it: the keeper (launcher/run/keeper.py) against real escapes.

Each rank process tree here starts daemons that do what the issue's attacker did: fork
twice, `setsid`, `env -i` (so no process group, session or marker variable leads back),
and a child that is SIGSTOPped. argv[0] of each carries a token unique to the test, so
the process table can be searched for survivors after the keeper (or its parent, the
launcher stand-in) is gone.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

import launcher.run.keeper as keeper_module
from tests.faults.conftest import assert_no_job_process

KEEPER = Path(keeper_module.__file__)


def rank_script(tmp_path: Path, token: str, then: str) -> Path:
    script = tmp_path / "rank.sh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        # A daemon that leaves every trace behind: double fork, new session, empty environment.
        env -i setsid bash -c '(exec -a {token}-daemon sleep 600) & exit 0' </dev/null >/dev/null 2>&1
        # A grandchild in the rank's own session, and one that is stopped.
        (exec -a {token}-child sleep 600) &
        (exec -a {token}-stopped sleep 600) &
        stopped=$!
        while ! grep -q {token} /proc/$stopped/cmdline 2>/dev/null; do sleep 0.01; done
        kill -STOP $stopped
        while ! pgrep -f {token}-daemon >/dev/null; do sleep 0.01; done
        echo started > "{tmp_path}/started"
        {then}
        """))
    script.chmod(0o755)
    return script


def survivors(token: str) -> list[tuple[int, str]]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if token in cmdline:
            found.append((proc.info["pid"], cmdline))
    return found


def wait_for(path: Path, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def wait_until_gone(token: str, timeout_s: float = 10.0) -> list:
    deadline = time.monotonic() + timeout_s
    while survivors(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    return survivors(token)


def test_when_the_rank_ends_everything_it_started_is_killed_and_its_status_kept(tmp_path: Path):
    token = f"esc-{uuid.uuid4().hex[:8]}"
    script = rank_script(tmp_path, token, "sleep 0.5; exit 7")
    done = subprocess.run([sys.executable, "-S", str(KEEPER), str(script)], timeout=60)
    assert done.returncode == 7
    assert wait_until_gone(token) == []


def test_sigterm_to_the_keeper_stops_the_tree_and_it_dies_by_sigterm(tmp_path: Path):
    token = f"esc-{uuid.uuid4().hex[:8]}"
    script = rank_script(tmp_path, token, f"exec -a {token}-main sleep 600")
    proc = subprocess.Popen([sys.executable, "-S", str(KEEPER), str(script)], start_new_session=True)
    wait_for(tmp_path / "started")
    assert len(survivors(token)) == 4
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert wait_until_gone(token) == []


def test_the_launcher_killed_by_sigkill_takes_the_whole_tree_with_it(tmp_path: Path):
    token = f"esc-{uuid.uuid4().hex[:8]}"
    script = rank_script(tmp_path, token, f"exec -a {token}-main sleep 600")
    # A stand-in launcher: starts the keeper as launch-train does, then is SIGKILLed.
    launcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-S", {str(KEEPER)!r}, {str(script)!r}], start_new_session=True)
        time.sleep(600)
        """)])
    wait_for(tmp_path / "started")
    assert len(survivors(token)) == 4
    launcher.kill()
    launcher.wait(timeout=10)
    assert wait_until_gone(token) == []


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGKILL])
def test_a_rank_killed_by_a_signal_is_reported_killed_by_it(tmp_path: Path, sig):
    proc = subprocess.Popen([sys.executable, "-S", str(KEEPER), "bash", "-c", f"kill -{sig.value} $$"])
    assert proc.wait(timeout=30) == -sig


def test_a_command_that_cannot_run_is_exit_127_with_one_line(tmp_path: Path):
    done = subprocess.run([sys.executable, "-S", str(KEEPER), str(tmp_path / "missing")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 127
    assert done.stderr.strip().splitlines() == [f"keeper: cannot run {tmp_path / 'missing'}: No such file or directory"]


RANK_WITH_DAEMON = """\
import os, subprocess, sys, time
token = sys.argv[1]
# The escape of the issue: a daemon with an empty environment in a session of its own, double-forked.
subprocess.Popen(["env", "-i", "setsid", "bash", "-c", f"(exec -a {token}-daemon sleep 600) & exit 0"],
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait()
subprocess.Popen(["bash", "-c", f"exec -a {token}-child sleep 600"])
print("epoch: 1 step: 1, loss is 0.5", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _launch(tmp_path: Path, token: str, sleep_s: float) -> list[str]:
    payload = tmp_path / "rank_with_daemon.py"
    payload.write_text(RANK_WITH_DAEMON)
    hccn = tmp_path / "hccn.conf"
    hccn.write_text("address_0=192.168.30.1\naddress_1=192.168.30.2\n")
    return [sys.executable, "-m", "launcher.cli", "--job-dir", str(tmp_path / "job"), "--platform", "Ascend",
            "--hccn-conf", str(hccn), "--devices", "2", "--entry", str(payload), "--tee", "none",
            "--", token, str(sleep_s)]


def test_a_finished_job_takes_every_daemon_of_its_ranks_with_it(tmp_path: Path):
    token = f"esc-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(_launch(tmp_path, token, 1.0), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert wait_until_gone(token) == []


@pytest.mark.parametrize("how", ["SIGKILL", "SIGHUP"])
def test_the_controller_killed_or_hung_up_on_leaves_no_rank_and_no_daemon(tmp_path: Path, how: str):
    token = f"esc-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(_launch(tmp_path, token, 600), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(survivors(token)) < 4:  # two daemons and two children: every rank is up
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(getattr(signal, how))
    proc.communicate(timeout=60)
    assert wait_until_gone(token, 15) == []
    # A keeper outlives its rank's tree by the few milliseconds it takes to reap it and exit;
    # nothing is left to wait on once the controller is SIGKILLed, so this waits with a deadline.
    assert_no_job_process(tmp_path / "job", wait_s=15)
    status = json.loads((tmp_path / "job" / "job.json").read_text())["status"]
    if how == "SIGHUP":
        assert proc.returncode == 129 and status["state"] == "interrupted"
    else:
        assert proc.returncode == -signal.SIGKILL and status["state"] == "running"  # nothing can write it then


def test_a_rank_ignoring_sigterm_is_killed_after_the_grace_when_the_keeper_is_told_to_stop(tmp_path: Path):
    # The keeper used to go back to waitpid() after the signal and reach its SIGKILL step only
    # when some child ended: a rank that ignores SIGTERM kept itself and the keeper alive.
    token = f"esc-{uuid.uuid4().hex[:8]}"
    script = rank_script(tmp_path, token, f"trap '' TERM; exec -a {token}-main sleep 600")
    proc = subprocess.Popen([sys.executable, "-S", str(KEEPER), str(script)], start_new_session=True)
    wait_for(tmp_path / "started")
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    proc.wait(timeout=keeper_module.GRACE_S + 10)
    assert time.monotonic() - started < keeper_module.GRACE_S * 2 + 3
    assert proc.returncode == -signal.SIGKILL  # the rank's own end: killed after ignoring SIGTERM
    assert wait_until_gone(token, 5) == []


IGNORES_SIGTERM = """\
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[2], "w").close()
print("epoch: 1 step: 1, loss is 0.5", flush=True)
time.sleep(600)
"""


def test_sigkill_of_launch_train_while_a_rank_ignores_sigterm_leaves_nothing_after_the_grace(tmp_path: Path):
    token = f"esc-{uuid.uuid4().hex[:8]}"
    payload = tmp_path / "ignores_sigterm.py"
    payload.write_text(IGNORES_SIGTERM)
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "--job-dir", str(tmp_path / "job"),
                             "--platform", "CPU", "--devices", "1", "--entry", str(payload), "--tee", "none",
                             "--", token, str(tmp_path / "ignoring")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(tmp_path / "ignoring", 60)
    proc.kill()
    proc.wait(timeout=10)
    # Well under the 30 s and more the keeper and the rank lived before: the grace and a margin.
    assert wait_until_gone(token, keeper_module.GRACE_S + 5) == []
    assert_no_job_process(tmp_path / "job", wait_s=keeper_module.GRACE_S + 5)
