"""The console's log reading stays bounded and sees the end: \\r-only progress, a fast rank's last lines."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

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
