"""Look at every node of the allocation before the ranks start: one task per node, one srun step.

Each task (this launcher's own Python, ``-c`` a short script, no import of the project)
prints one JSON line: its node (SLURMD_NODENAME), whether it sees the marker file the
launcher just wrote into the job dir (the job dir must be on a file system every node
sees: the ranks write their LOG<rank>/ there and the launcher reads them), how many CPUs
it may use, its CPU flags, a TCP port free there (the first node's becomes the
scheduler's), and, in rank-table mode, the text of its hccn.conf (``{host}`` in the path
becomes the node's name, as with --hosts). Parsing the lines is pure (``parse_probe``).
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

PROBE_TIMEOUT_S = 60.0

# Runs on every node; prints exactly one JSON line. Kept free of project imports on purpose.
PROBE_SCRIPT = r"""
import json, os, socket, sys
marker, hccn = sys.argv[1], sys.argv[2]
node = os.environ.get("SLURMD_NODENAME", "")
out = {"node": node, "sees_marker": os.path.exists(marker), "cpus": len(os.sched_getaffinity(0))}
try:
    with open("/proc/cpuinfo") as f:
        flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
    out["cpu_flags"] = [x for x in flags if x.startswith(("avx", "amx", "fma", "sse4"))]
except OSError:
    out["cpu_flags"] = []
with socket.socket() as s:  # a port free on this node now, for the scheduler (first node)
    s.bind(("", 0))
    out["free_port"] = s.getsockname()[1]
if hccn:
    path = hccn.replace("{host}", node)
    out["hccn_path"] = path
    try:
        with open(path, encoding="utf-8") as f:
            out["hccn_text"] = f.read()
    except OSError as e:
        out["hccn_error"] = e.strerror or str(e)
if out["sees_marker"]:  # the whole answer as a file next to the marker (stdout lines may be split by srun)
    answer = os.path.join(os.path.dirname(marker), ".launch-train-probe-" + node + ".json")
    with open(answer + ".tmp", "w") as f:
        json.dump(out, f)
    os.replace(answer + ".tmp", answer)
print(json.dumps({"node": node, "sees_marker": out["sees_marker"]}), flush=True)
"""


class ProbeError(Exception):
    """A node that cannot run the job (job dir not shared, no hccn.conf, probe failed); one line."""


@dataclass(frozen=True)
class NodeProbe:
    node: str
    sees_marker: bool
    cpus: int
    cpu_flags: tuple[str, ...] = ()
    free_port: Optional[int] = None
    hccn_path: Optional[str] = None
    hccn_text: Optional[str] = None
    hccn_error: Optional[str] = None


def probe_argv(python: str, nodes: Sequence[str], marker: Path, hccn_conf: Optional[str]) -> list[str]:
    """The srun step: exactly one task on each allocated node."""
    return ["srun", f"--nodes={len(nodes)}", f"--ntasks={len(nodes)}", "--ntasks-per-node=1", f"--nodelist={','.join(nodes)}",
            "--overlap", "--kill-on-bad-exit=1", "--quiet",
            python, "-c", PROBE_SCRIPT, str(marker), hccn_conf or ""]


def parse_probe(stdout: str, nodes: Sequence[str], answers: Mapping[str, str] = {}) -> dict[str, NodeProbe]:
    """Node -> NodeProbe from the step's stdout (one short line a node) and the answer files' texts.

    ProbeError when a node did not answer, answered twice, or sees the marker but left no answer.
    """
    found: dict[str, NodeProbe] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            raw = json.loads(line)
            if raw.get("sees_marker"):
                if raw.get("node") not in answers:
                    raise ProbeError(f"node probe: node {raw.get('node')} left no answer file")
                raw = json.loads(answers[raw["node"]])
            probe = NodeProbe(node=str(raw["node"]), sees_marker=bool(raw["sees_marker"]), cpus=int(raw.get("cpus", 0)),
                              cpu_flags=tuple(raw.get("cpu_flags", ())), free_port=raw.get("free_port"),
                              hccn_path=raw.get("hccn_path"), hccn_text=raw.get("hccn_text"),
                              hccn_error=raw.get("hccn_error"))
        except (ValueError, KeyError, TypeError):
            raise ProbeError(f"node probe: unreadable answer {line[:80]!r}") from None
        if probe.node in found:
            raise ProbeError(f"node probe: node {probe.node} answered twice")
        found[probe.node] = probe
    missing = [n for n in nodes if n not in found]
    if missing:
        raise ProbeError(f"node probe: no answer from node {', '.join(missing)}")
    return found


def check_shared_job_dir(probes: Mapping[str, NodeProbe], job_dir: Path) -> None:
    blind = [p.node for p in probes.values() if not p.sees_marker]
    if blind:
        raise ProbeError(f"--job-dir {job_dir}: not visible on node {', '.join(blind)}; under Slurm the job dir "
                         "must be on a file system every node sees (e.g. your home or a shared scratch)")


class ProbeRun:
    """The probe step, started now and read later (the launcher imports and plans meanwhile)."""

    def __init__(self, python: str, nodes: Sequence[str], job_dir: Path, hccn_conf: Optional[str] = None,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        self.nodes, self.job_dir = list(nodes), job_dir
        self.marker = job_dir / ".launch-train-probe"
        self.marker.write_text("written by launch-train to check that every node sees the job directory\n")
        try:
            self.proc = subprocess.Popen(probe_argv(python, nodes, self.marker, hccn_conf), stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                         env=None if environ is None else dict(environ))
        except FileNotFoundError:
            self.marker.unlink(missing_ok=True)
            raise ProbeError("srun: not found (is this a Slurm client host?)") from None

    def abandon(self) -> None:
        """The launch stopped before reading the answers: end the step and remove what it wrote."""
        if self.proc.poll() is None:
            self.proc.terminate()  # srun cancels its step
        try:
            self.proc.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.marker.unlink(missing_ok=True)
        for node in self.nodes:
            (self.job_dir / f".launch-train-probe-{node}.json").unlink(missing_ok=True)

    def result(self) -> dict[str, NodeProbe]:
        """Wait for the step; the nodes' answers, or ProbeError (marker and answer files removed either way)."""
        try:
            stdout, stderr = self.proc.communicate(timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise ProbeError(f"node probe: srun did not finish in {PROBE_TIMEOUT_S:g} s") from None
        finally:
            self.marker.unlink(missing_ok=True)
            answers = {}
            for node in self.nodes:
                path = self.job_dir / f".launch-train-probe-{node}.json"
                try:
                    answers[node] = path.read_text()
                    path.unlink()
                except OSError:
                    pass
        if self.proc.returncode != 0:
            last = (stderr.strip().splitlines() or [f"exit status {self.proc.returncode}"])[-1]
            raise ProbeError(f"node probe: srun failed: {last}")
        probes = parse_probe(stdout, self.nodes, answers)
        check_shared_job_dir(probes, self.job_dir)
        return probes


def run_probe(python: str, nodes: Sequence[str], job_dir: Path, hccn_conf: Optional[str] = None,
              environ: Optional[Mapping[str, str]] = None) -> dict[str, NodeProbe]:
    """Write the marker, run the probe step, remove the marker; ProbeError on any failure."""
    return ProbeRun(python, nodes, job_dir, hccn_conf, environ).result()
