"""Progress of long work on stderr: a tqdm bar on a terminal, a plain line now and then in a log.

Shared by the launcher (collect-results) and deeplab (prepare-voc, synth, eval, convert), like
cpu_env: neither imports the other; both import this. Only tqdm and the standard library.

    with progress(total=len(names), what="images") as bar:
        for name in names:
            ...
            bar.update()

On a terminal the bar shows items done / total, rate and time left (tqdm). Written to a file
or a pipe, \\r-redrawn bars would fill a log with one endless line: instead one line

    deeplab-synth: images 140/1464 (9.6/s, 2:18 left)

at most every ``LINE_INTERVAL_S`` seconds (``CONSOLE_PROGRESS_INTERVAL_S`` in the environment
sets another), and one when the work ends - unless it ended before the first was due: work
that takes a moment needs no progress, and a failing tool's stderr stays its one error line.
"""
from __future__ import annotations

import os
import sys
import time
from typing import IO, Optional

LINE_INTERVAL_S = 5.0
INTERVAL_VAR = "CONSOLE_PROGRESS_INTERVAL_S"


def line_interval_s() -> float:
    """Seconds between lines in a log: $CONSOLE_PROGRESS_INTERVAL_S if it is a number >= 0, else 5."""
    try:
        value = float(os.environ.get(INTERVAL_VAR, LINE_INTERVAL_S))
    except ValueError:
        return LINE_INTERVAL_S
    return value if value >= 0 else LINE_INTERVAL_S


class LineProgress:
    """The non-terminal form: a line at most every ``interval_s`` seconds and a last one at close."""

    def __init__(self, total: Optional[int], what: str, prefix: str, stream: IO[str], interval_s: float) -> None:
        self.total = total
        self.what = what
        self.prefix = prefix
        self.stream = stream
        self.interval_s = interval_s
        self.done = 0
        self._started = time.monotonic()
        self._last_line = self._started
        self._lines = 0
        self._closed = False

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._last_line >= self.interval_s:
            self._write(now)

    def _write(self, now: float) -> None:
        from tqdm import tqdm

        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        counted = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        if self._closed:
            tail = f"{rate:.1f}/s, took {tqdm.format_interval(elapsed)}"
        elif self.total is not None and rate > 0:
            tail = f"{rate:.1f}/s, {tqdm.format_interval(max(self.total - self.done, 0) / rate)} left"
        else:
            tail = f"{rate:.1f}/s"
        self.stream.write(f"{self.prefix}{self.what} {counted} ({tail})\n")
        self.stream.flush()
        self._last_line = now
        self._lines += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            now = time.monotonic()
            if self._lines or now - self._started >= self.interval_s:
                self._write(now)

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc) -> None:
        # After an error the count so far is no news; the error line is what matters.
        if exc[0] is None:
            self.close()
        self._closed = True


class NoProgress:
    """What a library call shows when its caller did not ask for progress (tests, other tools)."""

    def update(self, count: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "NoProgress":
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress(total: Optional[int], what: str, prog: str = "", stream: Optional[IO[str]] = None,
             interval_s: Optional[float] = None, enabled: bool = True):
    """A progress meter for ``total`` items (None: unknown) named ``what``; use as a context manager.

    ``prog`` (the tool's name) starts each line in a log, where several tools may write.
    ``enabled=False`` gives a meter that shows nothing (library calls default to it; CLIs enable it).
    """
    if not enabled:
        return NoProgress()
    stream = sys.stderr if stream is None else stream
    prefix = f"{prog}: " if prog else ""
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=f"{prefix}{what}", unit=" " + what.split()[0] if what else "it",
                    file=stream, dynamic_ncols=True, leave=True)
    return LineProgress(total, what, prefix, stream, line_interval_s() if interval_s is None else interval_s)
