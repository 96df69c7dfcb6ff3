"""launcher.run.stacks against real processes: a sleeping Python, a SIGSTOPped one, a non-Python one."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from launcher.run.stacks import dump_stacks, find_py_spy, parse_threads, stack_file_text, waiting_in

SLEEPER = textwrap.dedent("""
    import sys, threading, time

    def load_batches():
        time.sleep(600)

    def wait_for_peer():
        print("ready", flush=True)
        time.sleep(600)

    threading.Thread(target=load_batches, name="data-worker", daemon=True).start()
    wait_for_peer()
""")


@pytest.fixture
def sleeper(tmp_path: Path):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    time.sleep(0.2)  # into time.sleep()
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_py_spy_is_installed_with_the_project():
    assert find_py_spy() is not None


def test_a_sleeping_python_process_shows_every_thread_and_where_it_waits(sleeper):
    dump = dump_stacks([sleeper.pid], timeout_s=30)[sleeper.pid]
    assert dump.ok, dump.text
    assert dump.state == "sleeping"
    threads = {name: frames for _, name, frames in parse_threads(dump.text)}
    assert set(threads) == {"MainThread", "data-worker"}
    assert any(f.startswith("wait_for_peer (sleeper.py:") for f in threads["MainThread"])
    assert any(f.startswith("load_batches (sleeper.py:") for f in threads["data-worker"])
    assert "wait_for_peer (sleeper.py:" in dump.waiting_in
    text = stack_file_text("stacks of rank 0", [dump])
    assert text.startswith("stacks of rank 0\n") and f"== process {sleeper.pid} (sleeping" in text
    assert "waiting in: " in text and "data-worker" in text


def test_a_stopped_process_is_still_read_and_said_to_be_stopped(sleeper):
    sleeper.send_signal(signal.SIGSTOP)
    try:
        # SIGSTOP takes effect when the process is next scheduled: on a busy machine it can still
        # be runnable for a moment. The dump is of a process that is stopped.
        deadline = time.monotonic() + 10
        while psutil.Process(sleeper.pid).status() != psutil.STATUS_STOPPED:
            assert time.monotonic() < deadline, "SIGSTOP never took effect"
            time.sleep(0.01)
        dump = dump_stacks([sleeper.pid], timeout_s=30)[sleeper.pid]
    finally:
        sleeper.send_signal(signal.SIGCONT)
    assert dump.ok, dump.text
    assert dump.state.startswith("stopped") and dump.how == "--nonblocking"
    assert "wait_for_peer (sleeper.py:" in dump.waiting_in


def test_a_process_that_is_not_python_or_is_gone_gives_a_reason_not_an_error(tmp_path: Path):
    other = subprocess.Popen(["sleep", "600"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        dumps = dump_stacks([other.pid, gone.pid], timeout_s=30)
    finally:
        other.kill()
        other.wait()
    assert not dumps[other.pid].ok and "not a Python process" in dumps[other.pid].text
    assert not dumps[gone.pid].ok and dumps[gone.pid].state == "gone"
    assert dumps[other.pid].waiting_in is None


def test_waiting_in_prefers_native_then_python_frames():
    text = textwrap.dedent("""\
        Process 7: python train.py
        Python v3.11.7 (/usr/bin/python3.11)

        Thread 7 (idle): "MainThread"
            __futex_abstimed_wait_common (libc.so.6)
            mindspore::device::cpu::CPUKernelExecutor::LaunchKernel (libmindspore_backend.so)
            __call__ (mindspore/nn/cell.py:733)
            train (deeplab/train.py:210)
        Thread 9 (idle): "Thread-1"
            select (libc.so.6)
        """)
    assert waiting_in(text) == "__futex_abstimed_wait_common (libc.so.6) <- __call__ (mindspore/nn/cell.py:733)"
    assert waiting_in("no threads here") is None
