"""Long work shows its progress: a tqdm bar on a terminal (a real pseudo-terminal here), plain lines in a log.

The five tools run as real processes: deeplab-synth, deeplab-prepare-voc, deeplab-eval and
deeplab-convert (real MindSpore, on the session's 2-rank job's checkpoint) and collect-results.
"""
from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests.fixtures.collect_jobs import RankSpec, make_job

FAST = ["--set", "threads=1", "--set", "num_parallel_workers=1"]
BAR = r"{prog}: {what}: 100%\|[^|]*\| {total}/{total} \["  # tqdm: "deeplab-synth: images: 100%|####| 6/6 [00:01<00:00, ...]"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MS_", "OMPI_", "RANK_"))}
    env.pop("COLUMNS", None)
    return env


def run_on_pty(*command: str, timeout: float = 300) -> tuple[int, str]:
    """Run with stdin, stdout and stderr on a new pseudo-terminal of 120 columns; its whole output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=_env(), close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer of the terminal has gone
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")


def assert_bar(output: str, prog: str, what: str, total: int) -> None:
    assert re.search(BAR.format(prog=re.escape(prog), what=re.escape(what), total=total), output), output[-3000:]
    assert "\r" in output  # redrawn in place
    # Rate and time left while it runs, e.g. "3/6 [00:00<00:01, 5.21 images/s]", or, when an item takes
    # more than a second (a loaded machine), tqdm's inverse "1/8 [00:12<01:27, 12.50s/ images]".
    rate = r"(?:[\d.]+ ?\S*/s|[\d.]+s/ ?\S+)"
    assert re.search(rf"\d+/{total} \[\d\d:\d\d<\d\d:\d\d, +{rate}\]", output), output[-3000:]


def tool(name: str) -> list[str]:
    return [str(Path(sys.executable).parent / name)]


def test_deeplab_synth_and_prepare_voc_show_a_bar_on_a_terminal(tmp_path):
    code, output = run_on_pty(*tool("deeplab-synth"), "--out", str(tmp_path / "synth"), "--train", "4", "--val", "2",
                              "--size", "64")
    assert code == 0, output
    assert_bar(output, "deeplab-synth", "images", 6)
    code, output = run_on_pty(*tool("deeplab-prepare-voc"), "--voc-root", str(tmp_path / "synth"),
                              "--out", str(tmp_path / "prepared"))
    assert code == 0, output
    assert_bar(output, "deeplab-prepare-voc", "images", 6)


def test_in_a_log_progress_is_a_plain_line(tmp_path):
    # Interval 0: a line after every image (the default, 5 s, prints none for work this short).
    done = subprocess.run([*tool("deeplab-synth"), "--out", str(tmp_path / "synth"), "--train", "4", "--val", "2",
                           "--size", "64"], capture_output=True, text=True, timeout=300,
                          env={**_env(), "CONSOLE_PROGRESS_INTERVAL_S": "0"})
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "%|" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("deeplab-synth: images")]
    assert [line.split()[2] for line in lines] == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6", "6/6"], done.stderr
    assert re.fullmatch(r"deeplab-synth: images 3/6 \([\d.]+/s, \d\d:\d\d left\)", lines[2]), lines[2]
    assert re.fullmatch(r"deeplab-synth: images 6/6 \([\d.]+/s, took \d\d:\d\d\)", lines[-1]), lines[-1]


def test_collect_results_shows_hosts_and_hashing_on_a_terminal(tmp_path):
    job_dir = make_job(tmp_path / "jobs", [RankSpec(0), RankSpec(1)])
    code, output = run_on_pty(*tool("collect-results"), str(job_dir), "-o", str(tmp_path / "results"),
                              "--no-hash-cache")
    assert code == 0, output
    assert_bar(output, "collect-results", "hosts", 1)
    files = len(list(p for p in job_dir.rglob("*") if p.is_file()))
    assert re.search(rf"collect-results: files hashed: 100%\|[^|]*\| (\d+)/\1 \[", output), output
    assert re.search(r"report: \S+report.html", output)
    assert files > 0


@pytest.mark.slow
def test_deeplab_eval_and_convert_show_a_bar_on_a_terminal(two_rank_cpu_job, synthetic_voc, tmp_path):
    ckpt = two_rank_cpu_job / "LOG0" / "ckpt" / "deeplab-best.ckpt"
    code, output = run_on_pty(*tool("deeplab-eval"), "--config", "tiny_synthetic", "--data-root", str(synthetic_voc),
                              "--ckpt", str(ckpt), "--scales", "1.0", "--no-flip", *FAST)
    assert code == 0, output
    assert_bar(output, "deeplab-eval", "images", 8)
    assert re.search(r"mIoU = [01]\.\d{5}", output)
    code, output = run_on_pty(*tool("deeplab-convert"), "--config", "tiny_synthetic", str(ckpt),
                              str(tmp_path / "converted.ckpt"), *FAST)
    assert code == 0, output
    steps = re.search(r"deeplab-convert: steps: 100%\|[^|]*\| (\d+)/\1 \[", output)
    assert steps and int(steps.group(1)) > 2, output[-3000:]
    assert (tmp_path / "converted.ckpt").is_file()
