"""What starting a job costs each SSH host in CPU (not wall time); prints one JSON object.

    .venv/bin/python bench/host_cost.py [--devices 1] [--repeat 5] [--tree DIR ...]   (root: starts sshd)

On a machine whose cores every "host" shares (bench/scale.py --transport ssh: 64 sshd on
loopback, 2 cores), a host's CPU, not the network, decides how fast a job starts. One real
sshd on 127.0.1.1 (tests/fixtures/sshd.py) and, for each --tree (a checkout of this project;
default: this one), interleaved --repeat times:

  launch_server_cpu_ms    launch-train over that host (rank-table, fake hccn.conf, a payload that
                          prints a line and exits): everything the host ran for the job -- its SSH
                          connections and sessions (one since pre-flight's session carries on as the
                          agent; three before: pre-flight, SFTP, the agent), their shells, the
                          probe, the agent, keepers, run.sh and the payload -- as sshd's reaped
                          children's CPU (10 ms ticks)
  launch_controller_cpu_ms  the launch-train process (both connections' client side, planning)
  sshd_connection_cpu_ms  one connection as this checkout's launcher makes it (paramiko, key exchange, auth),
                          one `true` run on it, closed: sshd, its privilege-separated children and
                          the session's shell
  sshd_with_sftp_cpu_ms   the same with an SFTP session opened and closed on it (sftp-server)
  client_connection_cpu_ms  the controller's side of those (paramiko, fabric; client_with_sftp_cpu_ms)
  probe_cpu_ms            pre-flight's probe command (launcher/remote/preflight.py), run here
  agent_to_hello_cpu_ms   the agent from exec to its "hello" line (all its threads, exact: schedstat)
  agent_process_cpu_ms    the agent's own CPU from exec until its ranks have exited and it is stopped
  rank_chain_cpu_ms       one rank as the agent starts it: keeper -> bash run.sh (env.sh) -> payload
  keeper_cpu_ms           the keeper alone around `true`
  payload_cpu_ms          the payload alone (python payload.py)

Each --tree's `launcher` is put first on PYTHONPATH through a two-line sh wrapper used as
--remote-python (the same ~1 ms for every tree), so an old checkout (`git archive main | tar -x`)
is measured beside this one in the same run; a first launch per tree writes its bytecode caches and is
not counted. Medians over the repeats, in ms; load_avg before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PAYLOAD = 'print("epoch: 1 step: 1, loss is 0.5", flush=True)\n'
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _children_cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * 1000


def _reaped_cpu_ms(pid: int) -> float:
    """CPU of pid's children that it has reaped (cutime + cstime), in ms (10 ms ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) * TICK_MS


def _threads_cpu_ms(pid: int) -> float:
    """CPU of every live thread of pid, exact (schedstat's nanoseconds)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e6


def _quiet_listener(listener: int, timeout_s: float = 10.0) -> None:
    """Wait until sshd has reaped every connection (a session ends shortly after its client closes)."""
    import psutil

    deadline = time.monotonic() + timeout_s
    while psutil.Process(listener).children() and time.monotonic() < deadline:
        time.sleep(0.02)


def _run_cpu_ms(argv: list[str], *, cwd: Path, env: dict) -> float:
    """CPU of one command and everything it reaped."""
    before = _children_cpu_ms()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd, env=env)
    return _children_cpu_ms() - before


class Tree:
    """One checkout under test: its wrapper interpreter and its own job dir."""

    def __init__(self, index: int, source: Path, work: Path) -> None:
        self.label = str(source)
        self.source = source
        self.python = work / f"python-{index}"
        self.python.write_text(f'#!/bin/sh\nPYTHONPATH={source} exec {sys.executable} "$@"\n')
        self.python.chmod(0o755)
        # As under sshd: no PYTHON* settings of this shell (PYTHONDONTWRITEBYTECODE would compile every
        # module from source in every process), only the tree.
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
        self.env["PYTHONPATH"] = str(source)
        self.job_dir = work / f"job-{index}"
        # Every command runs here, not in a checkout: `python -m`/`-c` put the working directory first
        # on sys.path, and this one's launcher would shadow the tree's.
        self.cwd = work
        self.figures: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)


def measure_launch(tree: Tree, hosts, work: Path, listener: int, devices: int, run: int) -> None:
    config = hosts.write_ssh_config(work / "ssh_config")
    job_dir = tree.job_dir if run < 0 else tree.job_dir.with_name(f"{tree.job_dir.name}-{run}")
    argv = [sys.executable, "-m", "launcher.cli", "--hosts", hosts.specs()[0], "--ssh-config", str(config),
            "--ssh-known-hosts", str(hosts.known_hosts), "--platform", "Ascend", "--no-topology-check",
            "--hccn-conf", str(work / "hccn.conf"), "--devices", str(devices), "--entry", str(work / "payload.py"),
            "--remote-python", str(tree.python), "--tee", "none", "--status-interval", "3600",
            "--job-dir", str(job_dir)]
    _quiet_listener(listener)
    server_before, controller_before = _reaped_cpu_ms(listener), _children_cpu_ms()
    done = subprocess.run(argv, env=tree.env, cwd=tree.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    controller = _children_cpu_ms() - controller_before
    if done.returncode != 0:
        raise RuntimeError(f"launch-train ({tree.label}) exited {done.returncode}: {done.stderr[-800:]}")
    _quiet_listener(listener)
    if run < 0:  # the warm-up: bytecode caches written, the job dir the agent runs below made
        return
    tree.add("launch_server_cpu_ms", _reaped_cpu_ms(listener) - server_before)
    tree.add("launch_controller_cpu_ms", controller)


def measure_connections(tree: Tree, hosts, listener: int, count: int = 10) -> None:
    """sshd's side of the launcher's own connections (paramiko), and of an SFTP session on one."""
    from launcher.remote.ssh import SshOptions, connection, open_sftp, resolve_hosts
    from launcher.job.hosts import host_entries

    options = SshOptions(known_hosts=hosts.known_hosts, key_file=hosts.client_key)
    (remote,) = resolve_hosts(host_entries(hosts.specs()[0], None), options)
    for with_sftp in (False, True):
        _quiet_listener(listener)
        before, client_before = _reaped_cpu_ms(listener), time.process_time()
        for _ in range(count):
            conn = connection(remote, options)
            conn.open()
            conn.run("true", hide=True)
            if with_sftp:
                open_sftp(conn, remote.name).close()
            conn.close()
        client = (time.process_time() - client_before) * 1000 / count
        _quiet_listener(listener)
        tree.add("sshd_with_sftp_cpu_ms" if with_sftp else "sshd_connection_cpu_ms",
                 (_reaped_cpu_ms(listener) - before) / count)
        tree.add("client_with_sftp_cpu_ms" if with_sftp else "client_connection_cpu_ms", client)


def measure_probe(tree: Tree, work: Path) -> None:
    request = {"job_dir": str(tree.job_dir), "platform": "Ascend", "devices": 1, "remote_python": str(tree.python),
               "imports": ["launcher"], "scheduler_port": None, "commands": [], "min_free_bytes": 1,
               "hccn_conf": str(work / "hccn.conf")}
    # The tree's own probe: its source is what runs on the host.
    command = subprocess.run(
        [sys.executable, "-c", "import json, sys\nfrom launcher.remote.preflight import probe_command\n"
                               "print(probe_command(sys.argv[1], json.loads(sys.argv[2])))",
         str(tree.python), json.dumps(request)],
        env=tree.env, cwd=tree.cwd, check=True, capture_output=True, text=True).stdout.rstrip("\n")
    tree.add("probe_cpu_ms", _run_cpu_ms(["bash", "-c", command], cwd=tree.cwd, env=tree.env))


def measure_agent(tree: Tree, devices: int) -> None:
    """The agent as the controller would start it on this host, on the job dir the launch left."""
    from launcher.remote.protocol import decode_event

    before = _children_cpu_ms()
    agent = subprocess.Popen([str(tree.python), "-m", "launcher.remote.agent", "--job-dir", str(tree.job_dir),
                              "--host", "127.0.1.1", "--job-file", "agents/host-0.json"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env=tree.env, cwd=tree.job_dir)  # where the controller's command starts it
    try:
        exited = 0
        for line in agent.stdout:
            event = decode_event(line)
            if event is None:
                continue
            if event["event"] == "hello":
                tree.add("agent_to_hello_cpu_ms", _threads_cpu_ms(agent.pid))
            elif event["event"] == "exited":
                exited += 1
                if exited == devices:
                    own = _threads_cpu_ms(agent.pid)
                    agent.stdin.write("stop 1\n")
                    agent.stdin.flush()
            elif event["event"] == "done":
                break
        agent.stdin.close()
        agent.wait(timeout=30)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    total = _children_cpu_ms() - before
    tree.add("agent_process_cpu_ms", own)
    tree.add("agent_and_ranks_cpu_ms", total)


# How the tree starts a command under its keeper (older trees: the keeper as a script).
_KEEPER_ARGV = """import json, sys
try:
    from launcher.run.local import keeper_argv
except ImportError:
    from launcher.run.local import KEEPER
    keeper_argv = lambda command: [sys.executable, "-S", str(KEEPER), *command]
print(json.dumps(keeper_argv(sys.argv[1:])))
"""


def measure_rank(tree: Tree, work: Path) -> None:
    run_sh = tree.job_dir / "LOG0" / "run.sh"

    def under_keeper(*command: str) -> list[str]:
        return json.loads(subprocess.run([sys.executable, "-c", _KEEPER_ARGV, *command], env=tree.env, cwd=tree.cwd,
                                         check=True, capture_output=True, text=True).stdout)

    tree.add("keeper_cpu_ms", _run_cpu_ms(under_keeper("true"), cwd=tree.cwd, env=tree.env))
    tree.add("rank_chain_cpu_ms", _run_cpu_ms(under_keeper("bash", str(run_sh)), cwd=run_sh.parent, env=tree.env))
    tree.add("payload_cpu_ms", _run_cpu_ms([str(tree.python), str(work / "payload.py")], cwd=tree.cwd, env=tree.env))


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1, help="ranks on the host")
    parser.add_argument("--repeat", type=int, default=5, help="runs per tree, interleaved between the trees")
    parser.add_argument("--tree", type=Path, action="append", default=[],
                        help="a checkout whose launcher is measured (repeatable; default: this one)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: it starts sshd on 127.0.1.1")
    if not 1 <= args.devices <= 8 or not 1 <= args.repeat <= 100:
        parser.error("--devices 1..8, --repeat 1..100")
    from tests.fixtures.sshd import start_sshd_hosts, stop_sshd_hosts

    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="host-cost-") as tmp:
        work = Path(tmp)
        (work / "payload.py").write_text(PAYLOAD)
        (work / "hccn.conf").write_text("".join(f"address_{d}=192.168.0.{10 + d}\n" for d in range(8)))
        trees = [Tree(index, source.resolve(), work) for index, source in enumerate(args.tree or [HERE.parent])]
        (work / "sshd").mkdir()
        hosts = start_sshd_hosts(work / "sshd", ["127.0.1.1"])
        try:
            listener = hosts.processes[0].pid
            for tree in trees:
                measure_launch(tree, hosts, work, listener, args.devices, -1)
            for run in range(args.repeat):
                for tree in trees:
                    measure_launch(tree, hosts, work, listener, args.devices, run)
                    measure_connections(tree, hosts, listener)
                    measure_probe(tree, work)
                    measure_agent(tree, args.devices)
                    measure_rank(tree, work)
        finally:
            left = stop_sshd_hosts(hosts)
    print(json.dumps({
        "devices": args.devices, "repeat": args.repeat, "tick_ms": TICK_MS,
        "trees": {tree.label: {name: round(statistics.median(values), 1) for name, values in tree.figures.items()}
                  for tree in trees},
        "left_behind": left, "load_avg_before": load_before, "load_avg_after": _load(), "cores": os.cpu_count(),
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
