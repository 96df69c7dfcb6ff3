"""How one controller's start, fail-fast and Ctrl-C scale with the host count; prints one JSON object.

    .venv/bin/python bench/scale.py --transport sim --hosts 1024 --devices 8
    .venv/bin/python bench/scale.py --transport ssh --hosts 64 --devices 1      (root: starts sshd)

Transports:
  sim  the real controller (run_job -> the ssh backend: pre-flight of every host, its sessions kept
       for the agents the controller starts; host slices, the bounded pool, RemoteHostGroup,
       AgentSession's threads, the supervisor) against fake hosts that speak the
       agent protocol (tests/fixtures/sim_hosts.py). Only the network is missing; each connection
       waits --sim-connect-ms for its handshake. CPU platform, dynamic mode. Where the fake hosts run:
         - hosts the controller starts that are not relays: in the bench process; their CPU time and
           their threads (named sim-*) are measured apart and left out of the controller's figures;
         - with a tree (above 64 hosts, or --ssh-tree-width), --relays process (the default): each
           relay host the controller starts (the tree's first tier) is a process of its own
           (tests/fixtures/sim_relay_host.py) running its fake agent, the REAL relay code
           (launcher/remote/relay.py) and, in-process there, every fake host below it (deeper relays
           included), as on a machine of its own. The controller talks to it through its channel
           (stdin/stdout of that process), so the bench process is the controller alone; the relay
           processes' CPU and peak RSS are reported apart (they share this machine's cores with the
           controller, so wall times are an upper bound at a high host count);
         - --relays in-process: the relays and their subtrees run in the bench process (threads named
           sim-*); their CPU is not subtracted, and their memory, fds, GIL time and timers count as the
           controller's: an upper bound, and at 4,096 hosts mostly not the controller's (docs/benchmarks.md).
  ssh  launch-train itself (a subprocess) over real sshd hosts on 127.0.1.1.. (tests/fixtures/sshd.py),
       with a payload that prints a line and sleeps; pre-flight included. Every SSH session runs the
       login shell's start-up files (one session per host the controller starts: pre-flight's, carried
       on as the agent; two per host a relay starts); --plain-login-shell measures hosts
       whose shell starts plain (this machine's root ~/.bashrc runs pyenv init in each). Controller figures are the
       launch-train process's (psutil samples every 50 ms). --mode rank-table (default: Ascend with
       fake hccn.conf files, nothing but the launcher and the payload runs) or dynamic (CPU: the first
       host also starts MindSpore's scheduler, whose import dominates on a small machine).

Fields:
  agents_started_s        sim: launch -> the last fake agent started (read its job document, said hello;
                          CLOCK_MONOTONIC, the same clock in the relay processes);
                          ssh: launch-train started -> every rank process started (its first file write)
  job_written_s           ssh: launch-train started -> job.json written (pre-flight and planning done)
  first_line_s            launch -> every rank's first log line reached the controller (sim) /
                          is in its log.txt (ssh)
  failfast_s              one rank exits 1 -> the controller has stopped every agent and returned/exited
  ctrl_c_s                SIGINT (sim: the same Interrupt the signal handler triggers) -> returned/exited
  controller_cpu_s        CPU of the controller over the fail-fast run (sim: the bench process's, the
                          in-process fake hosts' CPU removed; the relay processes' is not in it)
  controller_peak_rss_mb  peak RSS (sim: the bench process, its in-process fake hosts' few bytes of
                          state included, over both runs)
  controller_max_threads  most threads at once (sim: the bench process's, without sim-* threads: the
                          controller's own, and one transport thread per connection as paramiko has)
  controller_threads_at_max
                          sim: those threads by name (numbers as N) when there were the most
  tree_depth, tree_first_tier
                          the start's tree (--ssh-tree-width): hops to the farthest host, hosts the
                          controller starts itself
  relays, relay_processes sim: where the relays ran (--relays) and how many processes that was
  relay_processes_cpu_s, relay_process_peak_rss_mb
                          sim, --relays process: the relay processes' CPU over the fail-fast run (all of
                          them: what 32 machines would share) and the largest one's peak RSS
  fake_hosts_cpu_s        sim: the in-process fake hosts' CPU (left out of controller_cpu_s)
  controller_max_fds      most open file descriptors at once (sim: the bench process's; a relay
                          process's channel is 4: its stdin and stdout, and the channel's pipe)
  idle_cpu_ms_per_host_s  sim: the controller's CPU per host per second while every rank runs
                          (3 s between every first line and the fail-fast): heartbeats, "alive"
                          events, the supervisor's once-a-second sweep of every host
  bytes_per_host          sim: bytes pushed to each host (min, max)
  load_avg                1/5/15-minute load when the bench started and ended: figures taken at a
                          load above the core count are not final
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


# How long the controller is watched doing nothing but keeping every agent company.
IDLE_WINDOW_S = 3.0


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# -- sim ------------------------------------------------------------------------------------
def _sim_backend(cluster, options, hosts: int, devices: int):
    from launcher.backends.ssh import SshBackend
    from launcher.job.hosts import host_entries
    from launcher.remote.ssh import RemoteHost

    class SimBackend(SshBackend):
        """The ssh backend with the sim transport: its pre-flight and agent starts, over fake hosts
        whose addresses are made up (no DNS)."""

        def _resolve(self, entries):
            return [RemoteHost(entry, entry.host, f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", 22,
                               "root") for index, entry in enumerate(entries)]

        def _connect(self):
            return cluster.connect

    entries = host_entries(",".join(f"sim-{index}" for index in range(hosts)), None)
    return SimBackend.from_options(options, entries)


class _Sampler:
    """Samples threads, fds and RSS of this process every 50 ms (the sim's own threads left out)."""

    def __init__(self) -> None:
        self.max_threads = self.max_fds = 0
        self.threads_at_max: dict[str, int] = {}  # thread name (numbers dropped) -> how many, at the most
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sim-sampler")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            names = [t.name for t in threading.enumerate() if not t.name.startswith("sim-")]
            if len(names) > self.max_threads:
                self.max_threads = len(names)
                self.threads_at_max = dict(collections.Counter(re.sub(r"\d+", "N", name) for name in names))
            with contextlib.suppress(OSError):
                self.max_fds = max(self.max_fds, len(os.listdir("/proc/self/fd")))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _sim_run(hosts: int, devices: int, connect_ms: float, parallel: int, end: str, work: Path,
             tree_width: Optional[int], relay_processes: bool = True, idle_window_s: float = IDLE_WINDOW_S,
             deadline_s: float = 1800.0):
    """One launch against fake hosts, ended by a rank failure (end="fail") or Ctrl-C (end="ctrl-c"),
    or by Ctrl-C when not every first line came within ``deadline_s``; (figures, the SimCluster, ended:
    every relay host's process has exited and its hosts are in the cluster's ``hosts``)."""
    from launcher.job.options import LaunchOptions
    from launcher.remote import group as remote_group
    from launcher.run.supervisor import Interrupt
    from launcher.run_job import run_job
    from tests.fixtures.sim_hosts import SimCluster

    cluster = SimCluster(connect_latency_s=connect_ms / 1000, relay_processes=relay_processes)
    total = hosts * devices
    first_lines: dict[int, float] = {}
    everyone_seen = threading.Event()
    original = remote_group.RemoteHostGroup._read_lines

    def timed_read_lines(group):
        lines = original(group)
        if lines:
            now = time.monotonic()
            for rank, _line in lines:
                first_lines.setdefault(rank, now)
            if len(first_lines) >= total:
                everyone_seen.set()
        return lines

    options = LaunchOptions(hosts=",".join(f"sim-{index}" for index in range(hosts)), platform="CPU",
                            devices=devices, job_dir=work / f"job-{end}", tee="none", status_interval_s=3600.0,
                            ssh_parallel=parallel, ssh_tree_width=tree_width, python=sys.executable)
    backend = _sim_backend(cluster, options, hosts, devices)
    interrupt = Interrupt()
    marks: dict[str, float] = {}
    returned_early = threading.Event()

    def end_it() -> None:
        give_up = time.monotonic() + deadline_s
        while not everyone_seen.wait(0.5):
            if returned_early.is_set():
                return
            if time.monotonic() > give_up:
                interrupt.trigger(signal.SIGINT)  # never all up: end the launch (and every host's process)
                return
        # The controller's cost while every rank runs and nothing happens (heartbeats, "alive", sweeps).
        cpu_before, host_before = time.process_time(), cluster.host_cpu_s
        time.sleep(idle_window_s)
        marks["idle_cpu_s"] = time.process_time() - cpu_before - (cluster.host_cpu_s - host_before)
        marks["end"] = time.monotonic()
        if end == "fail":
            cluster.fail_rank(total - 1)
        else:
            interrupt.trigger(signal.SIGINT)

    remote_group.RemoteHostGroup._read_lines = timed_read_lines
    ender = threading.Thread(target=end_it, daemon=True, name="sim-ender")
    sampler = _Sampler()
    cpu0 = time.process_time()
    t0 = time.monotonic()
    ender.start()
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            result = run_job(options, backend, interrupt=interrupt)
    finally:
        returned = time.monotonic()
        remote_group.RemoteHostGroup._read_lines = original
        sampler.close()
        cpu = time.process_time() - cpu0 - cluster.host_cpu_s
        returned_early.set()  # the ender, if still waiting for every first line, gives up
        cluster.close()  # after the controller's figures: waiting for the relay hosts' reports is not its work
    started = [host.started_at for host in cluster.hosts.values() if host.started_at is not None]
    sizes = [host.bytes_received for host in cluster.hosts.values()]
    reports = cluster.process_reports
    return {
        "exit_code": result.exit_code,
        "message": (result.message or "")[:200] or None,
        "first_failure": [result.first_failure.rank, result.first_failure.host] if result.first_failure else None,
        "agents_started": len(started),
        "agents_started_s": round(max(started) - t0, 3) if len(started) == hosts else None,
        "first_line_s": round(max(first_lines.values()) - t0, 3) if len(first_lines) >= total else None,
        "end_s": round(returned - marks["end"], 3) if "end" in marks else None,
        "idle_cpu_ms_per_host_s": round(marks["idle_cpu_s"] * 1000 / idle_window_s / hosts, 3)
        if "idle_cpu_s" in marks and idle_window_s else None,
        "max_connections_setting_up": cluster.max_setting_up,
        "controller_cpu_s": round(cpu, 2),
        "host_cpu_s": round(cluster.host_cpu_s, 2),
        "relay_processes": len(cluster.processes),
        "relay_processes_cpu_s": round(sum(report["cpu_s"] for report in reports), 2) if reports else None,
        "relay_process_peak_rss_mb": round(max(report["peak_rss_mb"] for report in reports), 1) if reports else None,
        "controller_max_threads": sampler.max_threads,
        "controller_threads_at_max": sampler.threads_at_max,
        "controller_max_fds": sampler.max_fds,
        "max_open_connections": cluster.max_open_connections,
        "bytes_per_host": [min(sizes), max(sizes)] if sizes else None,
        "wall_s": round(returned - t0, 3),
    }, cluster


def bench_sim(args: argparse.Namespace) -> dict:
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="scale-sim-") as tmp:
        processes = args.relays == "process"
        failed, _ = _sim_run(args.hosts, args.devices, args.sim_connect_ms, args.ssh_parallel, "fail", Path(tmp),
                             args.ssh_tree_width, processes)
        interrupted = (_sim_run(args.hosts, args.devices, args.sim_connect_ms, args.ssh_parallel, "ctrl-c", Path(tmp),
                                args.ssh_tree_width, processes)[0] if not args.no_ctrl_c else None)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "transport": "sim", "hosts": args.hosts, "ranks": args.hosts * args.devices,
        "ssh_parallel": args.ssh_parallel, "sim_connect_ms": args.sim_connect_ms, **_tree(args),
        "relays": args.relays, "relay_processes": failed["relay_processes"],
        "agents_started_s": failed["agents_started_s"], "first_line_s": failed["first_line_s"],
        "controller_cpu_s": failed["controller_cpu_s"], "fake_hosts_cpu_s": failed["host_cpu_s"],
        "relay_processes_cpu_s": failed["relay_processes_cpu_s"],
        "relay_process_peak_rss_mb": failed["relay_process_peak_rss_mb"],
        "controller_peak_rss_mb": round(peak_mb, 1),
        "controller_max_threads": max(failed["controller_max_threads"],
                                      interrupted["controller_max_threads"] if interrupted else 0),
        "controller_threads_at_max": max((failed, interrupted) if interrupted else (failed,),
                                         key=lambda run: run["controller_max_threads"])["controller_threads_at_max"],
        "controller_max_fds": failed["controller_max_fds"],
        "max_open_connections": failed["max_open_connections"],
        "max_connections_setting_up": failed["max_connections_setting_up"],
        "idle_cpu_ms_per_host_s": failed["idle_cpu_ms_per_host_s"],
        "failfast_s": failed["end_s"], "failfast_exit_code": failed["exit_code"],
        "ctrl_c_s": interrupted["end_s"] if interrupted else None,
        "ctrl_c_exit_code": interrupted["exit_code"] if interrupted else None,
        "bytes_per_host": failed["bytes_per_host"],
        "wall_s": failed["wall_s"],
        "load_avg_before": load_before, "load_avg_after": _load(), "cores": os.cpu_count(),
    }


def _tree(args: argparse.Namespace) -> dict:
    """The tree the controller starts along (launcher.remote.tree), as the dry run says it."""
    from launcher.remote.tree import plan_tree

    tree = plan_tree(list(range(args.hosts)), args.ssh_tree_width)
    return {"ssh_tree_width": args.ssh_tree_width, "tree_depth": tree.depth, "tree_first_tier": len(tree.roots)}


# -- ssh ------------------------------------------------------------------------------------
PAYLOAD = '''\
import os, sys, time
open("started", "w").close()
print("epoch: 1 step: 1, loss is 0.5", flush=True)
if os.environ.get("FAIL_RANK") == os.environ.get("RANK_ID"):
    # Fail once every rank has started (the job dir is shared on loopback hosts): fail-fast then
    # stops a whole running job, not one still starting.
    job_dir, size = os.environ["LAUNCH_TRAIN_JOB_DIR"], int(os.environ["RANK_SIZE"])
    while not all(os.path.exists(f"{job_dir}/LOG{r}/started") for r in range(size)):
        time.sleep(0.1)
    time.sleep(0.5)
    open("failed_at", "w").write(repr(time.time()))
    sys.exit(3)
time.sleep(600)
'''


def _platform_args(mode: str, work: Path) -> list[str]:
    if mode == "dynamic":  # CPU: the first host also runs MindSpore's scheduler (an import of MindSpore)
        return ["--platform", "CPU"]
    return ["--platform", "Ascend", "--hccn-conf", str(work / "hccn" / "{host}" / "hccn.conf"), "--no-topology-check"]


def _ssh_run(hosts, work: Path, config: Path, known_hosts: Path, devices: int, parallel: int, end: str,
             mode: str, tree_width: Optional[int]) -> dict:
    import psutil

    job_dir = work / f"job-{end}"
    total = len(hosts.hosts) * devices
    env = dict(os.environ, FAIL_RANK=str(total - 1) if end == "fail" else "none")
    argv = [sys.executable, "-m", "launcher.cli", "--hosts", ",".join(hosts.specs()), "--ssh-config", str(config),
            "--ssh-known-hosts", str(known_hosts), "--ssh-parallel", str(parallel),
            *(["--ssh-tree-width", str(tree_width)] if tree_width is not None else []), *_platform_args(mode, work), "--devices", str(devices), "--entry", str(work / "payload.py"),
            "--env", f"FAIL_RANK={env['FAIL_RANK']}",
            "--tee", "none", "--status-interval", "3600", "--job-dir", str(job_dir)]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    watched = psutil.Process(proc.pid)
    cpu = threads = fds = rss = 0.0
    started_s = first_s = end_at = written_s = None
    try:
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                times = watched.cpu_times()
                cpu = times.user + times.system
                threads = max(threads, watched.num_threads())
                fds = max(fds, watched.num_fds())
                rss = max(rss, watched.memory_info().rss)
            now = time.monotonic()
            if written_s is None and (job_dir / "job.json").exists():
                written_s = now - t0  # pre-flight done, plan written: the agents' start begins
            if started_s is None and all((job_dir / f"LOG{r}" / "started").exists() for r in range(total)):
                started_s = now - t0
            if first_s is None and started_s is not None and all(
                    (job_dir / f"LOG{r}" / "log.txt").exists() and b"loss is" in (job_dir / f"LOG{r}" / "log.txt").read_bytes()
                    for r in range(total)):
                first_s = now - t0
                if end == "ctrl-c":
                    end_at = time.monotonic()
                    os.kill(proc.pid, signal.SIGINT)
            if end == "fail" and end_at is None and (job_dir / f"LOG{total - 1}" / "failed_at").exists():
                # The payload wrote the time just before exiting.
                end_at = time.monotonic() - max(0.0, time.time() - float((job_dir / f"LOG{total - 1}" / "failed_at").read_text() or time.time()))
            if now - t0 > 600:
                proc.kill()
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    returned = time.monotonic()
    stderr = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
    return {"exit_code": proc.returncode, "agents_started_s": round(started_s, 3) if started_s else None,
            "job_written_s": round(written_s, 3) if written_s else None,
            "first_line_s": round(first_s, 3) if first_s else None,
            "end_s": round(returned - end_at, 3) if end_at else None, "controller_cpu_s": round(cpu, 2),
            "controller_max_threads": int(threads), "controller_max_fds": int(fds),
            "controller_peak_rss_mb": round(rss / 2**20, 1), "stderr_tail": stderr}


def bench_ssh(args: argparse.Namespace) -> dict:
    from tests.fixtures.sshd import PLAIN_LOGIN_SHELL, start_sshd_hosts, stop_sshd_hosts

    load_before = _load()
    addresses = [f"127.0.1.{index + 1}" for index in range(args.hosts)]
    with tempfile.TemporaryDirectory(prefix="scale-ssh-") as tmp:
        work = Path(tmp)
        (work / "sshd").mkdir()
        hosts = start_sshd_hosts(work / "sshd", addresses, PLAIN_LOGIN_SHELL if args.plain_login_shell else ())
        try:
            config = hosts.write_ssh_config(work / "ssh_config")
            known_hosts = work / "known_hosts"
            lines = hosts.known_hosts.read_text().splitlines()
            if args.known_hosts_entries:
                # Other hosts' entries first (a user's long-lived file), the test hosts' at the end.
                from tests.fixtures.known_hosts_filler import filler_lines

                lines = filler_lines(args.known_hosts_entries - len(lines)) + lines
            known_hosts.write_text("\n".join(lines) + "\n")
            (work / "payload.py").write_text(PAYLOAD)
            for index, spec in enumerate(hosts.specs()):  # fake hccn.conf per host (rank-table mode)
                name = spec.split("@", 1)[1]
                (work / "hccn" / name).mkdir(parents=True)
                (work / "hccn" / name / "hccn.conf").write_text(
                    "".join(f"address_{d}=192.168.{index}.{10 + d}\n" for d in range(8)))
            failed = _ssh_run(hosts, work, config, known_hosts, args.devices, args.ssh_parallel, "fail", args.mode,
                              args.ssh_tree_width)
            interrupted = _ssh_run(hosts, work, config, known_hosts, args.devices, args.ssh_parallel, "ctrl-c",
                                   args.mode, args.ssh_tree_width) if not args.no_ctrl_c else None
        finally:
            left = stop_sshd_hosts(hosts)
    return {
        "transport": "ssh", "mode": args.mode, "hosts": args.hosts, "ranks": args.hosts * args.devices,
        "ssh_parallel": args.ssh_parallel, **_tree(args), "plain_login_shell": args.plain_login_shell,
        "known_hosts_entries": max(args.known_hosts_entries, len(addresses)),
        "job_written_s": failed["job_written_s"],
        "agents_started_s": failed["agents_started_s"], "first_line_s": failed["first_line_s"],
        "controller_cpu_s": failed["controller_cpu_s"], "controller_peak_rss_mb": failed["controller_peak_rss_mb"],
        "controller_max_threads": max(failed["controller_max_threads"],
                                      interrupted["controller_max_threads"] if interrupted else 0),
        "controller_max_fds": failed["controller_max_fds"],
        "failfast_s": failed["end_s"], "failfast_exit_code": failed["exit_code"],
        "ctrl_c_s": interrupted["end_s"] if interrupted else None,
        "ctrl_c_exit_code": interrupted["exit_code"] if interrupted else None,
        "first_line_s_ctrl_c_run": interrupted["first_line_s"] if interrupted else None,
        "stderr_tail": failed["stderr_tail"] if failed["exit_code"] not in (1, 3) else None,
        "ctrl_c_stderr_tail": interrupted["stderr_tail"] if interrupted and interrupted["exit_code"] != 130 else None,
        "left_behind": left,
        "load_avg_before": load_before, "load_avg_after": _load(), "cores": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("sim", "ssh"), required=True)
    parser.add_argument("--hosts", type=int, required=True)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--ssh-parallel", type=int, default=32)
    parser.add_argument("--ssh-tree-width", type=int, default=None,
                        help="launch-train's --ssh-tree-width: above this many hosts, a tree start (0: never; "
                             "default: launch-train's, no tree up to 64 hosts and width 32 above)")
    parser.add_argument("--relays", choices=("process", "in-process"), default="process",
                        help="sim with a tree: each relay host the controller starts runs in a process of its own "
                             "with its subtree (default), or in the bench process (its work then counts as the "
                             "controller's)")
    parser.add_argument("--sim-connect-ms", type=float, default=50.0,
                        help="sim: each connection's handshake wait (network round trips, no CPU)")
    parser.add_argument("--known-hosts-entries", type=int, default=0,
                        help="ssh: pad known_hosts to this many entries (other hosts' keys before the test hosts')")
    parser.add_argument("--no-ctrl-c", action="store_true", help="skip the second (Ctrl-C) run")
    parser.add_argument("--plain-login-shell", action="store_true",
                        help="ssh: the hosts' sshd sets SHLVL=1, so bash skips ~/.bashrc for their sessions "
                             "(this machine's runs pyenv init: ~100 ms of CPU and a shared lock per session)")
    parser.add_argument("--mode", choices=("rank-table", "dynamic"), default="rank-table",
                        help="ssh: rank-table (Ascend with fake hccn.conf files: only the launcher runs) or "
                             "dynamic (CPU: the first host also runs MindSpore's scheduler)")
    args = parser.parse_args()
    if not 1 <= args.hosts <= 65536 or not 1 <= args.devices <= 64:
        parser.error("--hosts 1..65536, --devices 1..64")
    if args.transport == "ssh" and not 1 <= args.hosts <= 254:
        parser.error("--transport ssh: --hosts 1..254 (one loopback address each)")
    figures = bench_sim(args) if args.transport == "sim" else bench_ssh(args)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
