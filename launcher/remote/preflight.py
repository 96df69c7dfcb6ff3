"""Pre-flight: check every host in parallel before anything starts anywhere.

One SSH session per host runs a small self-contained Python probe (the function
``probe`` below, shipped as source to ``--remote-python``) that checks, on that host:
the interpreter and the imports the job needs (``launcher``, plus the package of ``--module``
when one runs: ``deeplab`` by default; nothing more for ``--entry``); that the job dir can be created and
written, with 2 GiB free there; the device count (CPU: usable cores, GPU: ``nvidia-smi``, Ascend: ``npu-smi``
or the ``address_N`` lines of hccn.conf); hccn.conf readable (Ascend, its text comes
back for the rank table); ``mpirun`` on the first host and ``orted`` on the others
(mpirun mode); and, on the first host of a dynamic job, that the scheduler port is free
(port 0: the probe picks a free one); on Ascend, where the tools exist, the NPUs' health
(``npu-smi info``) and their links (``hccn_tool -i N -link -g``). It also reports the host's usable cores and CPU
flags, which the plan uses for core binding and CPU tuning. Connection problems (refused,
unknown host key, bad user/key, timeout) are failures of the ``ssh`` check.

Any failure anywhere -> ``PreflightFailed`` whose message is one table of what
failed where; the CLI prints it and exits 2, nothing has been started.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Collection, Optional, Sequence

import paramiko

from launcher.job.platforms import MAX_DEVICES_PER_HOST
from launcher.remote.ssh import (RemoteHost, SshOptions, connection, describe_ssh_error, fabric_config, run_command,
                                 run_on_each)

if TYPE_CHECKING:
    from launcher.remote.session import WaitingAgent

PLATFORMS = ("CPU", "GPU", "Ascend")
# How long a kept pre-flight session waits to become the agent (the controller plans and writes
# the job dir meanwhile: seconds, even at 1,024 hosts x 8).
BOOTSTRAP_WAIT_S = 600.0
# Logs, rendered files and a few checkpoints of a big net (R101: ~0.7 GB each with optimizer state).
MIN_FREE_BYTES = 2 << 30
# What running the probe over an open connection raises when the connection or the command goes
# wrong (a timeout is a TimeoutError, an OSError); anything else is a bug, not a host problem.
PROBE_TRANSPORT_ERRORS = (OSError, EOFError, paramiko.SSHException)


@dataclass(frozen=True)
class PreflightRequest:
    """What the job needs from each host."""

    job_dir: Path  # absolute; the same path on every host
    platform: str
    devices: dict  # host name (RemoteHost.host_name) -> ranks it will run
    remote_python: str = sys.executable
    scheduler_port: Optional[int] = None  # checked on the first host only; 0 = pick one there
    hccn_conf: Optional[str] = None  # path on each host (Ascend)
    mpirun: bool = False  # mpirun mode: mpirun on the first host, Open MPI's orted on the others
    first_host: Optional[str] = None  # host_name of the job's first host (None: the first one checked)
    imports: tuple[str, ...] = ("launcher",)  # what the host's interpreter must import (the agent, the ranks' module)
    min_free_bytes: int = MIN_FREE_BYTES  # free space the job dir's file system needs there

    def __post_init__(self) -> None:
        if not Path(self.job_dir).is_absolute():
            raise ValueError(f"job dir {self.job_dir}: must be an absolute path (it is used on every host)")
        if self.platform not in PLATFORMS:
            raise ValueError(f"--platform {self.platform}: expected one of {', '.join(PLATFORMS)}")
        if not self.remote_python:
            raise ValueError("--remote-python: empty interpreter path")


@dataclass(frozen=True)
class HostReport:
    """Outcome of the pre-flight on one host: check name -> (ok, detail)."""

    host: str
    checks: dict = field(default_factory=dict)
    scheduler_port: Optional[int] = None
    hccn_conf_text: Optional[str] = None
    device_count: Optional[int] = None
    cpus: tuple = ()  # usable core ids there (for rank binding and thread counts)
    cpu_flags: frozenset = frozenset()  # /proc/cpuinfo flags there (CPU tuning: AVX-512 cap)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(name, detail) for name, (ok, detail) in self.checks.items() if not ok]


class PreflightFailed(ValueError):
    """Some check failed on some host; the message is the table the user sees."""

    def __init__(self, reports: Sequence[HostReport]):
        self.reports = list(reports)
        failed_hosts = [report for report in self.reports if report.failures]
        rows = [(report.host, name, detail) for report in failed_hosts for name, detail in report.failures]
        super().__init__(
            f"pre-flight failed on {len(failed_hosts)} of {len(self.reports)} hosts; nothing was started\n"
            + format_table(("host", "check", "problem"), rows)
        )


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def probe(request: dict) -> dict:
    """Runs ON THE REMOTE HOST (shipped as source): standard library only, never raises.

    It imports what a check needs when that check runs (socket, shutil, subprocess: ~5 ms of
    CPU on every host, where a CPU job needs none of them).
    """
    import os
    import sys as _sys

    checks: dict = {}
    out: dict = {"checks": checks}
    checks["python"] = [True, f"{_sys.executable} {_sys.version.split()[0]}"]
    import importlib

    names = list(request.get("imports") or ["launcher"])
    failed = []
    where = ""
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as error:  # any import failure is the answer
            failed.append(f"{name}: {error}")
            continue
        if name == "launcher":
            where = os.path.dirname(os.path.dirname(os.path.abspath(module.__file__)))
    if failed:
        checks["import"] = [False, f"`import {', '.join(names)}` failed with {_sys.executable}: {'; '.join(failed)}"]
    else:
        checks["import"] = [True, where or ", ".join(names)]

    job_dir = request["job_dir"]
    existing = job_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing == job_dir and not os.path.isdir(job_dir):
        checks["job_dir"] = [False, f"{job_dir} exists and is not a directory"]
    elif not os.access(existing, os.W_OK | os.X_OK):
        checks["job_dir"] = [False, f"cannot create {job_dir}: {existing} is not writable"]
    else:
        checks["job_dir"] = [True, job_dir]
    # Room for the logs and the checkpoints: a full disk mid-run kills the job at its next save.
    try:
        stats = os.statvfs(existing)
        free = stats.f_bavail * stats.f_frsize
        need = int(request.get("min_free_bytes") or 0)
        checks["disk"] = [free >= need, f"{free / 2**30:.1f} GiB free in {existing}"
                          + ("" if free >= need else f", {need / 2**30:.1f} GiB needed")]
    except OSError as error:
        checks["disk"] = [False, f"cannot stat {existing}: {error.strerror}"]

    port = request.get("scheduler_port")
    if port is not None:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("", port))
                out["scheduler_port"] = sock.getsockname()[1]
                checks["scheduler_port"] = [True, str(out["scheduler_port"])]
            except OSError as error:
                checks["scheduler_port"] = [False, f"port {port} is in use ({error.strerror})"]

    for command in request.get("commands") or ():
        import shutil

        found = shutil.which(command)
        checks[command] = [found is not None, found or f"{command} not found in PATH of a non-interactive ssh session"]

    hccn_text = None
    hccn_path = request.get("hccn_conf")
    if hccn_path:
        try:
            with open(hccn_path) as handle:
                hccn_text = handle.read()
            out["hccn_conf_text"] = hccn_text
            checks["hccn_conf"] = [True, hccn_path]
        except OSError as error:
            checks["hccn_conf"] = [False, f"cannot read {hccn_path}: {error.strerror}"]

    def run_text(command: list) -> "str | None":
        """A tool's output, or None when it is missing, fails or takes too long."""
        import shutil

        if shutil.which(command[0]) is None:
            return None
        import subprocess

        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    def count_lines(command: list, marker: str) -> "int | None":
        text = run_text(command)
        return None if text is None else sum(1 for line in text.splitlines() if marker in line)

    out["cpus"] = sorted(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        flags = []
    out["cpu_flags"] = flags

    platform, needed = request["platform"], request["devices"]
    if platform == "CPU":
        count = len(os.sched_getaffinity(0))
        # More CPU ranks than cores is slow but legal (tests do it): reported, not refused.
        note = "" if needed <= count else f" (oversubscribed: {needed} ranks)"
        checks["devices"] = [True, f"{count} cores{note}"]
    else:
        if platform == "GPU":
            count, how = count_lines(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], ""), "nvidia-smi"
        else:
            count, how = count_lines(["npu-smi", "info", "-l"], "NPU ID"), "npu-smi"
            if count is None and hccn_text is not None:
                count = sum(1 for line in hccn_text.splitlines() if line.strip().startswith("address_"))
                how = f"address_N lines in {hccn_path}"
        if count is None:
            checks["devices"] = [False, f"cannot count {platform} devices ({how} not found or failed)"]
        elif count < needed:
            checks["devices"] = [False, f"{needed} {platform} devices needed, {count} found by {how}"]
        else:
            checks["devices"] = [True, f"{count} found by {how}"]
    out["device_count"] = count

    # Ascend: the NPUs' own health and their network links, where the tools are installed.
    if platform == "Ascend":
        table = run_text(["npu-smi", "info"])
        if table is not None:
            bad = [line.strip() for line in table.splitlines()
                   if any(word in line for word in ("Critical", "Alarm", "Warning")) and "|" in line]
            checks["npu_health"] = [not bad, bad[0][:160] if bad else "every NPU OK (npu-smi info)"]
        import shutil

        if shutil.which("hccn_tool") is not None and isinstance(count, int):
            down = []
            for device in range(min(count, 64)):
                text = run_text(["hccn_tool", "-i", str(device), "-link", "-g"])
                if text is not None and "DOWN" in text.upper():
                    down.append(str(device))
            checks["npu_links"] = [not down, f"link DOWN on device(s) {','.join(down)}" if down
                                   else "every device's link UP (hccn_tool -link -g)"]
    return out


def bootstrap(wait_s: float) -> int:
    """Runs ON THE REMOTE HOST after ``probe`` answered, in the same process: wait for the controller's
    ``agent ARGS`` line and run this host's agent (launcher.remote.agent's main with ARGS) here, in
    this SSH session, on its stdin and stdout; or for ``receive ARGS``, only write the files sent
    (launcher.remote.file_stream) and exit.

    While it waits (the controller pre-flights the other hosts, then plans the job), it imports what
    the agent runs, so the agent's start is only its own work: on a machine whose cores every host
    shares (64 loopback hosts on 2 cores) that wait has idle CPU and the start has none. No exec:
    a new interpreter would import it all again. ``ps`` shows ``python -c ... --job-dir DIR --host
    NAME``. Without the line within ``wait_s`` (nothing is started: a failed pre-flight elsewhere,
    a controller gone quiet), or when stdin ends, it exits.
    """
    import json as _json
    import select
    import sys as _sys

    try:  # the agent's imports (one that fails fails again, and is reported, when the agent runs)
        import launcher.backends.local  # noqa: F401
        import launcher.job.job_record  # noqa: F401
        import launcher.remote.agent  # noqa: F401
        import launcher.remote.file_stream  # noqa: F401
        import launcher.run.supervisor  # noqa: F401
    except Exception:
        pass
    ready, _, _ = select.select([_sys.stdin.buffer], [], [], wait_s)
    # Buffered: what follows the line (the files, the protocol) stays in sys.stdin's buffer, which the
    # agent reads next.
    word, _space, args = (_sys.stdin.buffer.readline(1 << 20) if ready else b"").rstrip(b"\n").partition(b" ")
    if word == b"agent":
        from launcher.remote.agent import main
    elif word == b"receive":  # mpirun's other hosts: their files only
        from launcher.remote.file_stream import main
    else:
        return 0
    return main(_json.loads(args))


def probe_command(remote_python: str, request: dict, *, become_agent: bool = False, host: str = "") -> str:
    """The shell command that runs ``probe`` with ``remote_python`` on a host; ``become_agent``: then,
    when every check passed, ``bootstrap`` (the session stays open to become the host's agent; its
    command line names the job dir and ``host``, as the agent's would, for ``ps``)."""
    words = [shlex.quote(remote_python), "-c", _quoted_source(become_agent), shlex.quote(json.dumps(request))]
    if become_agent:
        words += ["--job-dir", shlex.quote(str(request["job_dir"])), "--host", shlex.quote(host)]
    return " ".join(words)


@functools.lru_cache(maxsize=2)
def _quoted_source(become_agent: bool) -> str:
    """The probe's program, quoted for the shell: made once (inspect reads and tokenizes this file:
    ~1 ms per host, a second of a 1,024-host pre-flight)."""
    source = ("import json, sys\n" + inspect.getsource(probe)
              + "\nanswer = probe(json.loads(sys.argv[1]))\nprint(json.dumps(answer), flush=True)\n")
    if become_agent:
        source += (inspect.getsource(bootstrap) + "\nif all(ok for ok, _detail in answer['checks'].values()):\n"
                   f"    sys.exit(bootstrap({BOOTSTRAP_WAIT_S!r}))\n")
    return shlex.quote(source)


def _answered(out: bytes) -> bool:
    """The probe printed its answer: a whole line of JSON that starts with its "checks"."""
    return any(line.startswith(b'{"checks": ') for line in out.split(b"\n")[:-1])


def check_host(host: RemoteHost, options: SshOptions, request: dict, conn,
               keep: bool = False) -> "tuple[HostReport, Optional[WaitingAgent]]":
    """Open ``conn`` (the host's unopened connection, or what making it raised) and run the probe; every
    problem becomes a failed check. ``keep``: when every check passed, the session is left open,
    waiting to become the host's agent (returned with the report; the caller closes it)."""
    from launcher.remote.session import WaitingAgent

    try:
        if isinstance(conn, Exception):
            raise conn
        conn.open()
    except Exception as error:  # any connection failure is reported in the table, not raised
        return HostReport(host.name, {"ssh": (False, describe_ssh_error(error, host, options))}), None
    checks: dict = {"ssh": (True, f"{host.user}@{host.hostname}:{host.port}")}
    waiting = None
    try:
        command = probe_command(request["remote_python"], request, become_agent=keep, host=host.host_name)
        done = run_command(conn, command, max(30, options.timeout_s * 3), answered=_answered if keep else None)
        if done.channel is not None:
            waiting = WaitingAgent(conn, done.channel)
            report = _report(host, request, checks, dataclasses.replace(done, exited=0))
            if report.failures:  # the probe exits by itself then; the session is not kept
                waiting = None
            return report, waiting
    except PROBE_TRANSPORT_ERRORS as error:  # a session dying mid-probe is a failure of that host
        return HostReport(host.name, {"ssh": (False, describe_ssh_error(error, host, options))}), None
    finally:
        if waiting is None:
            conn.close()
    return _report(host, request, checks, done), None


def _report(host: RemoteHost, request: dict, checks: dict, done) -> HostReport:
    """The probe's answer (the last line of its output) as the host's report."""
    if done.exited != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.exited}"])[-1]
        checks["python"] = (False, f"{request['remote_python']} cannot run the probe: {last}")
        return HostReport(host.name, checks)
    try:
        answer = json.loads((done.stdout.strip().splitlines() or [""])[-1])
    except json.JSONDecodeError:
        checks["python"] = (False, f"{request['remote_python']}: the probe's answer is not JSON "
                                   f"(a login script printing to stdout?): {done.stdout.strip()[-200:]!r}")
        return HostReport(host.name, checks)
    checks.update({name: (bool(ok), str(detail)) for name, (ok, detail) in answer["checks"].items()})
    count = answer.get("device_count")  # sizes a set of device ids here: an int in range, or unknown
    if not (isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_DEVICES_PER_HOST):
        count = None
    return HostReport(host.name, checks, answer.get("scheduler_port"), answer.get("hccn_conf_text"),
                      count, tuple(answer.get("cpus") or ()),
                      frozenset(answer.get("cpu_flags") or ()))


def run_preflight(hosts: Sequence[RemoteHost], options: SshOptions, request: PreflightRequest,
                  hccn_conf_for: Optional[Callable[[RemoteHost, str], str]] = None,
                  keep: Collection[str] = (), kept: Optional[dict] = None,
                  connect: Callable = connection) -> list[HostReport]:
    """Check all hosts in parallel; return their reports in host order or raise PreflightFailed.

    ``hccn_conf_for(host, path)`` gives the hccn.conf path on that host (default: ``path``).
    ``keep``: host names (RemoteHost.host_name) whose pre-flight session stays open to become
    their agent (``bootstrap``: one SSH session per host), put into ``kept`` by host name when
    every host passed; on a failure anywhere they are closed. ``connect``: as
    launcher.remote.ssh.connection (bench/scale.py's simulated hosts give their own).
    """
    config = fabric_config(options)
    # Every connection is made here, in one thread, before the fan-out: fabric's Connection() writes to
    # the config it is given (inline_ssh_env, which re-merges the whole config), and a thread reading the
    # shared config meanwhile (conn.run looks up config.runners) found it half rebuilt: "No attribute
    # or config key found for 'runners'" on some hosts of a 64-host pre-flight.
    connections: list = []
    for host in hosts:
        try:
            connections.append(connect(host, options, config))
        except Exception as error:  # reported by check_host in the table, as a failure to connect
            connections.append(error)

    def check(index_host: tuple[int, RemoteHost]) -> HostReport:
        index, host = index_host
        first = host.host_name == request.first_host if request.first_host is not None else index == 0
        payload = {
            "job_dir": str(request.job_dir),
            "platform": request.platform,
            "devices": int(request.devices.get(host.host_name, 1)),
            "remote_python": request.remote_python,
            "imports": list(request.imports),
            "scheduler_port": request.scheduler_port if first else None,
            "commands": (["mpirun"] if first else ["orted"]) if request.mpirun else [],
            "min_free_bytes": request.min_free_bytes,
            "hccn_conf": (hccn_conf_for(host, request.hccn_conf) if hccn_conf_for else request.hccn_conf)
            if request.platform == "Ascend" and request.hccn_conf else None,
        }
        return check_host(host, options, payload, connections[index], keep=host.host_name in keep)

    results = run_on_each(list(enumerate(hosts)), check, key=lambda index_host: index_host[0], parallel=options.parallel)
    reports, waiting = [], {}
    for index, host in enumerate(hosts):
        if index in results.failed:
            error = results[index]
            reports.append(HostReport(host.name, {"preflight": (False, f"{type(error).__name__}: {error}")}))
            continue
        report, session = results[index]
        reports.append(report)
        if session is not None:
            waiting[host.host_name] = session
    if any(report.failures for report in reports) or kept is None:
        for session in waiting.values():
            session.close()
        if any(report.failures for report in reports):
            raise PreflightFailed(reports)
        return reports
    kept.update(waiting)
    return reports
