"""A Slurm allocation as data: its nodes in order, each node's address, CPUs and devices.

Parsing only: the text comes from ``scontrol show hostnames "$SLURM_JOB_NODELIST"``
(one node name a line, in the allocation's order), ``scontrol show node -o NAMES`` (one
``Key=Value ...`` line per node; without -o a node spans several lines) and the job's
environment (``SLURM_JOB_ID``, ``SLURM_JOB_CPUS_PER_NODE="2(x3),1"``). Running those
commands is launcher/cluster/slurm_query.py's job.

Which variables are job-scoped and which are step-scoped matters: inside the batch
script SLURM_PROCID/SLURM_NODEID are 0 and SLURM_STEP_NODELIST is unset, so only the
SLURM_JOB_* ones describe the allocation; SLURM_PROCID means something only inside a
step (it is the task's global index, never a node index).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

# A Value may contain spaces (OS=Linux 6.1 #1 SMP ...); a new pair starts at a word "Key=".
_PAIR_START = re.compile(r"^([A-Za-z][A-Za-z0-9_:/.]*)=(.*)$")
_COUNTS_ITEM = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")
# Gres=gpu:8, gpu:a100:8(S:0-1), npu:8,gpu:2 ; the count is the last ":"-field before any "(".
_GRES_ITEM = re.compile(r"^([A-Za-z0-9_]+)(?::[^:,()]+)*?:(\d+)(?:\([^)]*\))?$")

GRES_NAMES = {"GPU": ("gpu",), "Ascend": ("npu", "ascend", "davinci")}


class SlurmParseError(ValueError):
    """Output of a Slurm command that does not say what it should; the message is one line."""


@dataclass(frozen=True)
class SlurmNode:
    """One node as ``scontrol show node`` reports it."""

    name: str
    address: str
    hostname: str
    cpus: int
    gres: str = ""
    state: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("slurm node: empty NodeName")
        if not self.address:
            raise ValueError(f"slurm node {self.name}: no NodeAddr")
        if self.cpus < 0:
            raise ValueError(f"slurm node {self.name}: CPUTot {self.cpus} is negative")

    def device_count(self, platform: str) -> int:
        """GPUs / NPUs this node's Gres lists for ``platform`` (0 when it lists none)."""
        names = GRES_NAMES.get(platform, ())
        total = 0
        for item in _split_gres(self.gres):
            match = _GRES_ITEM.match(item)
            if match and match.group(1).lower() in names:
                total += int(match.group(2))
        return total


@dataclass(frozen=True)
class SlurmAllocation:
    """The allocation a launch runs in: job id and nodes in the order Slurm lists them."""

    job_id: str
    nodes: tuple[SlurmNode, ...]
    cpus_per_node: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.job_id:
            raise ValueError("slurm allocation: empty job id")
        if not self.nodes:
            raise ValueError(f"slurm job {self.job_id}: the allocation has no nodes")
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"slurm job {self.job_id}: node listed twice in {','.join(names)}")
        if self.cpus_per_node and len(self.cpus_per_node) != len(self.nodes):
            raise ValueError(f"slurm job {self.job_id}: {len(self.cpus_per_node)} CPU counts "
                             f"for {len(self.nodes)} nodes")

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @property
    def first(self) -> SlurmNode:
        return self.nodes[0]

    def devices_per_node(self, platform: str) -> Optional[int]:
        """The devices every node has for ``platform`` by its Gres; None when they differ or none are listed."""
        counts = {n.device_count(platform) for n in self.nodes}
        if len(counts) != 1:
            return None
        count = counts.pop()
        return count or None


def parse_hostnames(text: str) -> tuple[str, ...]:
    """``scontrol show hostnames`` output: node names, one a line, order kept."""
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise SlurmParseError("scontrol show hostnames: printed no node names")
    bad = [n for n in names if any(c.isspace() for c in n)]
    if bad:
        raise SlurmParseError(f"scontrol show hostnames: {bad[0]!r} is not a node name")
    return names


def parse_node_records(text: str) -> list[dict[str, str]]:
    """``scontrol show node [-o]`` output as one Key -> Value dict per node."""
    records: list[dict[str, str]] = []
    key: Optional[str] = None
    for word in text.split():
        match = _PAIR_START.match(word)
        if match:
            key, value = match.group(1), match.group(2)
            if key == "NodeName":
                records.append({})
            if not records:
                raise SlurmParseError(f"scontrol show node: {word!r} before any NodeName=")
            records[-1][key] = value
        elif key is not None and records:
            records[-1][key] = f"{records[-1][key]} {word}"
        else:
            raise SlurmParseError(f"scontrol show node: unexpected {word!r} before any NodeName=")
    return records


def parse_nodes(text: str) -> dict[str, SlurmNode]:
    """Node name -> SlurmNode, from ``scontrol show node`` output."""
    nodes = {}
    for record in parse_node_records(text):
        name = record.get("NodeName", "")
        cpus_text = record.get("CPUTot", record.get("CPUs", "0"))
        if not cpus_text.isdigit():
            raise SlurmParseError(f"scontrol show node {name}: CPUTot={cpus_text!r} is not a number")
        gres = record.get("Gres", "")
        nodes[name] = SlurmNode(
            name=name,
            # NodeAddr defaults to the node name in Slurm; scontrol prints it either way.
            address=record.get("NodeAddr") or name,
            hostname=record.get("NodeHostName") or name,
            cpus=int(cpus_text),
            gres="" if gres == "(null)" else gres,
            state=record.get("State", ""),
        )
    return nodes


def parse_counts(text: str, what: str = "SLURM_JOB_CPUS_PER_NODE") -> tuple[int, ...]:
    """Slurm's compressed per-node counts: ``"2(x3),1"`` -> (2, 2, 2, 1)."""
    counts: list[int] = []
    for item in text.split(","):
        match = _COUNTS_ITEM.match(item.strip())
        if not match:
            raise SlurmParseError(f"{what}={text!r}: {item!r} is not N or N(xM)")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return tuple(counts)


def allocation(job_id: str, hostnames_text: str, nodes_text: str,
               cpus_per_node_text: Optional[str] = None) -> SlurmAllocation:
    """The allocation from the two scontrol outputs (and SLURM_JOB_CPUS_PER_NODE when known)."""
    names = parse_hostnames(hostnames_text)
    known = parse_nodes(nodes_text)
    missing = [n for n in names if n not in known]
    if missing:
        raise SlurmParseError(f"scontrol show node: no record for allocated node {missing[0]}")
    cpus = parse_counts(cpus_per_node_text) if cpus_per_node_text else ()
    if cpus and len(cpus) != len(names):
        raise SlurmParseError(f"SLURM_JOB_CPUS_PER_NODE={cpus_per_node_text!r}: {len(cpus)} counts "
                              f"for {len(names)} nodes")
    return SlurmAllocation(job_id=job_id, nodes=tuple(known[n] for n in names), cpus_per_node=cpus)


@dataclass(frozen=True)
class SlurmJobEnv:
    """What the job-scoped environment says (valid in salloc, sbatch scripts and steps alike)."""

    job_id: str
    nodelist: str
    num_nodes: Optional[int]
    cpus_per_node: Optional[str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Optional["SlurmJobEnv"]:
        """None outside an allocation (no SLURM_JOB_ID)."""
        job_id = environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID")
        if not job_id:
            return None
        nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST") or ""
        if not nodelist:
            raise SlurmParseError(f"SLURM_JOB_ID={job_id} is set but SLURM_JOB_NODELIST is not")
        num = environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES")
        if num is not None and not num.isdigit():
            raise SlurmParseError(f"SLURM_JOB_NUM_NODES={num!r}: not a number")
        return cls(job_id=job_id, nodelist=nodelist, num_nodes=int(num) if num else None,
                   cpus_per_node=environ.get("SLURM_JOB_CPUS_PER_NODE"))


def _split_gres(gres: str) -> list[str]:
    # "gpu:a100:4(S:0-1),npu:8" -> ["gpu:a100:4(S:0-1)", "npu:8"]: commas inside () belong to the item.
    items, depth, current = [], 0, ""
    for char in gres:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    if current:
        items.append(current)
    return [i.strip() for i in items if i.strip() and i.strip() != "(null)"]
