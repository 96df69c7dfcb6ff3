"""Every thread's stack of running processes, through py-spy, for the hang watchdog and --stack.

    dumps = dump_stacks([pid0, pid1], timeout_s=20)
    dumps[pid0].text        # what goes into LOG<rank>/stack.txt
    dumps[pid0].waiting_in  # "time_sleep (libpython3.11.so) <- train_loop (train.py:88)"

py-spy reads another interpreter's memory without stopping it for long (FIELD_NOTES).
A process that is itself stopped (SIGSTOP: the watchdog's test, or a debugger) cannot
be paused again by ptrace, so it is read with --nonblocking, which gives Python frames
only. --native adds the C/C++ frames below Python -- for a MindSpore rank the runtime
function it waits in (a collective, a queue) -- and is tried first. Every call has a
timeout: a dump must never hang the launcher that is trying to explain a hang.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

DEFAULT_TIMEOUT_S = 20.0
# /proc/PID/stat state letters, in words.
_STATES = {"R": "running", "S": "sleeping", "D": "waiting on disk (uninterruptible)", "T": "stopped (by a signal)",
           "t": "stopped (traced)", "Z": "zombie", "X": "dead", "I": "idle"}
_THREAD = re.compile(r'^Thread (?P<id>\S+) \((?P<activity>[^)]*)\)(?::\s*"(?P<name>.*)")?\s*$')


@dataclass(frozen=True)
class StackDump:
    pid: int
    state: str  # one of _STATES' words, or "gone"
    text: str  # py-spy's output; or one line saying why there is none
    ok: bool
    how: str  # the py-spy command line options used, "" when py-spy did not run

    @property
    def waiting_in(self) -> str | None:
        """Where the main thread is: its innermost frames (native first, then Python)."""
        return waiting_in(self.text, self.pid) if self.ok else None


def find_py_spy() -> str | None:
    """py-spy next to this interpreter (the venv that installed it), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def process_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    # The command name is in parentheses and may itself contain ") ": the state follows the last one.
    letter = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return _STATES.get(letter, letter)


def parse_threads(text: str) -> list[tuple[str, str, list[str]]]:
    """py-spy dump text -> [(thread id, thread name, frames innermost first)]; pure."""
    threads: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        match = _THREAD.match(line)
        if match:
            threads.append((match["id"], match["name"] or "", []))
        elif threads and line.startswith("    ") and line.strip():
            threads[-1][2].append(line.strip())
    return threads


def _is_native(frame: str) -> bool:
    # Python frames end in "(file.py:LINE)"; native ones in "(libfoo.so)" or are bare addresses.
    return not re.search(r"\(\S+:\d+\)$", frame)


def waiting_in(text: str, pid: int | None = None) -> str | None:
    """"<innermost native frame> <- <innermost Python frame>" of the main thread; pure."""
    threads = parse_threads(text)
    if not threads:
        return None
    main = next((t for t in threads if t[1] == "MainThread"), None)
    if main is None and pid is not None:
        main = next((t for t in threads if t[0] in (str(pid), hex(pid))), None)
    frames = (main or threads[0])[2]
    if not frames:
        return None
    python = next((f for f in frames if not _is_native(f)), None)
    native = frames[0] if _is_native(frames[0]) and not frames[0].startswith("0x") else None
    return " <- ".join(f for f in (native, python) if f) or frames[0]


def _run(py_spy: str, pid: int, options: list[str], timeout_s: float) -> tuple[bool, str]:
    try:
        done = subprocess.run([py_spy, "dump", "--pid", str(pid), *options], capture_output=True, text=True,
                              errors="replace", timeout=timeout_s, stdin=subprocess.DEVNULL,
                              env={**os.environ, "RUST_BACKTRACE": "0"})
    except subprocess.TimeoutExpired:
        return False, f"py-spy {' '.join(options)} gave no answer within {timeout_s:g} s"
    except OSError as err:
        return False, f"py-spy could not run: {err.strerror or err}"
    out = done.stdout.strip()
    if done.returncode == 0 and parse_threads(out):
        return True, out
    # py-spy's error is "Error: <why>" followed by a Rust backtrace nobody needs.
    error = next((line[len("Error: "):] for line in (done.stderr + "\n" + done.stdout).splitlines()
                  if line.startswith("Error: ")), (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"])
    return False, f"py-spy: {error if isinstance(error, str) else error[0]}"


def dump_stack(pid: int, timeout_s: float = DEFAULT_TIMEOUT_S, native: bool = True,
               py_spy: str | None = None) -> StackDump:
    """One process's stacks; never raises for a process that is gone, not Python, or stuck."""
    state = process_state(pid)
    if state == "gone":
        return StackDump(pid, state, f"process {pid} is gone", False, "")
    py_spy = py_spy or find_py_spy()
    if py_spy is None:
        return StackDump(pid, state, "py-spy is not installed (pip install py-spy)", False, "")
    if state.startswith("stopped"):
        attempts = [["--nonblocking"]]  # ptrace cannot pause a stopped process again
    else:
        attempts = ([["--native"]] if native else []) + [[], ["--nonblocking"]]
    reasons = []
    for options in attempts:
        ok, text = _run(py_spy, pid, options, timeout_s)
        if ok:
            return StackDump(pid, state, text, True, " ".join(options))
        if "python version" in text.lower():
            reasons.append(f"not a Python process ({text})")
            break  # other options will not help
        reasons.append(text)
        if "no such" in text.lower():
            break
    return StackDump(pid, process_state(pid), "; ".join(dict.fromkeys(reasons)), False, "")


def dump_stacks(pids: Iterable[int], timeout_s: float = DEFAULT_TIMEOUT_S, native: bool = True) -> dict[int, StackDump]:
    """dump_stack() of every pid, in parallel (a hung job's ranks are dumped at the same moment)."""
    pids = list(dict.fromkeys(pids))
    if not pids:
        return {}
    py_spy = find_py_spy()
    with ThreadPoolExecutor(max_workers=min(8, len(pids))) as pool:
        dumps = list(pool.map(lambda pid: dump_stack(pid, timeout_s, native, py_spy), pids))
    return {d.pid: d for d in dumps}


def stack_file_text(title: str, dumps: Iterable[StackDump]) -> str:
    """The text of one rank's stack.txt: a title line, then each process's dump; pure."""
    parts = [title.rstrip("\n"), ""]
    for dump in dumps:
        how = f", py-spy dump {dump.how}".rstrip() if dump.ok else ""
        parts.append(f"== process {dump.pid} ({dump.state}{how})")
        if dump.waiting_in:
            parts.append(f"waiting in: {dump.waiting_in}")
        parts.append(dump.text)
        parts.append("")
    return "\n".join(parts)
