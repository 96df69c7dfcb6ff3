"""The console's log reading stays bounded and sees the end: \\r-only progress, a fast rank's last lines."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path

import psutil

from launcher.run.logs import MAX_LINE_BYTES, LogFollower

MIB = 1 << 20


def write_with_program(path: Path, code: str) -> None:
    """A real process writes the log (as a rank would), then exits."""
    subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(path)], check=True, timeout=120)


def test_carriage_return_only_progress_is_read_in_bounded_memory(tmp_path: Path):
    log = tmp_path / "log.txt"
    follower = LogFollower.from_end(log)
    # 40 MB of a progress bar that redraws with "\r" and never prints "\n", then one step line.
    write_with_program(log, """
        import sys
        with open(sys.argv[1], "w") as out:
            for i in range(400_000):
                out.write(f"\\r[{'#' * (i % 60):<60}] {i:>7} it " + " " * 20)
            out.write("\\nepoch: 1 step: 1, loss is 0.5\\n")
        """)
    tracemalloc.start()
    seen = 0
    last = None
    for batch in follower.read_to_end():
        seen += len(batch)
        last = batch[-1]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seen == 1 + 400_000 + 1 and last == "epoch: 1 step: 1, loss is 0.5"  # "" before the first \r
    assert peak < 16 * MIB, peak  # the file is 40 MB; one batch is 1 MB of lines


def test_a_line_that_never_ends_is_handed_over_in_pieces(tmp_path: Path):
    log = tmp_path / "log.txt"
    follower = LogFollower(log)
    write_with_program(log, """
        import sys
        with open(sys.argv[1], "wb") as out:
            out.write(b"x" * (20 << 20))
        """)
    sizes = [len(line) for batch in follower.read_to_end() for line in batch]
    assert sizes and max(sizes) == MAX_LINE_BYTES and sum(sizes) + len(follower._partial) == 20 << 20
    assert len(follower._partial) <= MAX_LINE_BYTES


def test_the_last_lines_of_a_fast_rank_are_all_read(tmp_path: Path):
    log = tmp_path / "log.txt"
    follower = LogFollower.from_end(log)
    write_with_program(log, """
        import sys
        with open(sys.argv[1], "w") as out:
            for step in range(1, 300_001):
                out.write(f"epoch: 1 step: {step}, loss is 0.25\\n")
            out.write("training done at step 300000\\n")
        """)
    batches = list(follower.read_to_end())
    assert len(batches) > 5  # more than the old single 1 MB read at the end
    lines = [line for batch in batches for line in batch]
    assert len(lines) == 300_001 and lines[-1] == "training done at step 300000"


REPO = Path(__file__).resolve().parents[2]
FAST_RANK = """\
import os, sys
if os.environ["RANK_ID"] == "0":
    out = sys.stdout
    for step in range(1, 200_001):
        out.write(f"epoch: 1 step: {step}, loss is 0.25\\n")
    out.write("LAST LINE of a fast rank\\n")
    out.flush()
"""
PROGRESS_BAR = """\
import os, sys
if os.environ["RANK_ID"] == "0":
    for i in range(1_000_000):  # about 60 MB of a progress bar that never prints a newline
        sys.stdout.write(f"\\r[{'#' * (i % 40):<40}] {i:>8}")
    sys.stdout.write("\\nepoch: 1 step: 1, loss is 0.5\\n")
"""


def _launch(tmp_path: Path, code: str) -> subprocess.Popen:
    payload = tmp_path / "payload.py"
    payload.write_text(code)
    hccn = tmp_path / "hccn.conf"
    hccn.write_text("address_0=192.168.30.1\naddress_1=192.168.30.2\n")
    return subprocess.Popen([sys.executable, "-m", "launcher.cli", "--job-dir", str(tmp_path / "job"),
                             "--platform", "Ascend", "--hccn-conf", str(hccn), "--devices", "2", "--entry", str(payload),
                             "--tee", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_the_console_shows_every_last_line_of_a_fast_rank(tmp_path: Path):
    proc = _launch(tmp_path, FAST_RANK)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[-1].endswith("] LAST LINE of a fast rank")
    assert sum(1 for line in lines if "loss is 0.25" in line) == 200_000


def test_the_launcher_stays_small_on_carriage_return_only_output(tmp_path: Path):
    proc = _launch(tmp_path, PROGRESS_BAR)
    launcher = psutil.Process(proc.pid)
    peak = 0
    drained: list[str] = []
    reader = threading.Thread(target=lambda: drained.append(proc.stdout.read()), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            peak = max(peak, launcher.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    reader.join(timeout=60)
    err = proc.stderr.read()
    assert proc.returncode == 0, err
    assert peak < 200 * MIB, peak  # the log is ~60 MB; the launcher itself is ~60 MB
    assert (tmp_path / "job" / "LOG0" / "log.txt").stat().st_size > 40 * MIB
    assert drained and drained[0].splitlines()[-1].endswith("] epoch: 1 step: 1, loss is 0.5")
