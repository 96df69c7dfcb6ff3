"""Which host starts which agent: the controller a first tier, each of those its subtree.

With one SSH connection per host on the controller, a 1,024-host job holds 1,024
connections there (a paramiko transport thread each, three open files, a heartbeat each).
Open MPI's ssh launcher spawns along a tree for the same reason, and Slurm fans out through
its slurmds (TreeWidth 50). Here, above ``--ssh-tree-width W`` remote hosts, the
controller connects to at most W of them ("relays"); the agent of each relay connects
to its part of the others with the same SSH code (launcher.remote.relay), passes their
events up and the controller's lines down, and stops them when it stops. A part larger than
W is split the same way again, so the controller's connections, threads and files stay W
whatever the host count, and a start takes depth x (one connect + copy + agent start).

Without ``--ssh-tree-width`` the controller starts up to 64 hosts itself (64 connections and
transport threads are no burden to it) and a tree of width 32 above that: a tree of 64 hosts
would give each of 32 relays one host to start, a hop and a relay's SSH imports per host for
little saved (64 real sshd hosts on one 2-core machine: fail-fast 1.9 s direct, 3.2 s through
32 relays; docs/benchmarks.md).

The tree is planned once per attempt from the plan's host order: contiguous parts, each
led by its first host, so a relay always comes before the hosts it starts (the supervisor
starts groups in host order and the first failure it meets is the relay's own).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

DEFAULT_TREE_WIDTH = 32
DIRECT_HOSTS = 64  # without --ssh-tree-width: up to this many remote hosts, no tree
MAX_TREE_WIDTH = 1024
RELAY_DIR = "relay"  # job-dir/relay/<relay index>/host-<index>/...: a relay's copy of what its subtree is sent


@dataclass(frozen=True)
class SpawnTree:
    """Host indices (positions in the plan's host list) of the hosts started over SSH."""

    roots: tuple[int, ...]  # started by the controller
    children: dict  # index -> tuple of indices that host's agent starts
    parent: dict  # index -> the index of the host whose agent starts it (roots have none)

    @property
    def depth(self) -> int:
        """Hops from the controller to the farthest host (1: no tree)."""
        deepest = 0
        for index in self.parent:
            hops, at = 1, index
            while at in self.parent:
                at, hops = self.parent[at], hops + 1
            deepest = max(deepest, hops)
        return deepest if self.parent else (1 if self.roots else 0)

    def root_of(self, index: int) -> int:
        while index in self.parent:
            index = self.parent[index]
        return index

    def subtree(self, index: int) -> tuple[int, ...]:
        """Every host below ``index`` (not itself), in host order."""
        out: list[int] = []
        stack = list(reversed(self.children.get(index, ())))
        while stack:
            at = stack.pop()
            out.append(at)
            stack.extend(reversed(self.children.get(at, ())))
        return tuple(sorted(out))

    def describe(self) -> str:
        """One line for the dry run."""
        hosts = len(self.roots) + len(self.parent)
        if not self.parent:
            return f"SSH start: the controller starts every agent itself ({hosts} hosts)"
        relays = sum(1 for index in self.children if self.children[index])
        return (f"SSH start: a tree of depth {self.depth}: the controller starts {len(self.roots)} hosts' agents; "
                f"{relays} relay hosts start the other {len(self.parent)} (--ssh-tree-width; 0: no tree)")


def plan_tree(indices: Sequence[int], width: Optional[int] = None) -> SpawnTree:
    """Split ``indices`` (in host order) into at most ``width`` contiguous parts, each led by its
    first host, recursively; ``width`` 0 (or no more hosts than it): every host is a root.
    Width 1 is a chain (each host starts the next), which only tests want. ``width`` None (no
    --ssh-tree-width): 0 up to DIRECT_HOSTS hosts, DEFAULT_TREE_WIDTH above."""
    if width is None:
        width = 0 if len(indices) <= DIRECT_HOSTS else DEFAULT_TREE_WIDTH
    if isinstance(width, bool) or not isinstance(width, int) or not 0 <= width <= MAX_TREE_WIDTH:
        raise ValueError(f"--ssh-tree-width {width}: must be a whole number from 0 (no tree) to {MAX_TREE_WIDTH}")
    children: dict[int, tuple[int, ...]] = {}
    parent: dict[int, int] = {}

    def split(items: Sequence[int]) -> list[int]:
        """The leaders of ``items``' parts; their followers are split under them."""
        if width == 0 or len(items) <= width:
            return list(items)
        size, extra = divmod(len(items), width)
        leaders, start = [], 0
        for part in range(width):
            end = start + size + (1 if part < extra else 0)
            leader, followers = items[start], items[start + 1:end]
            below = split(followers)
            if below:
                children[leader] = tuple(below)
                for index in below:
                    parent[index] = leader
            leaders.append(leader)
            start = end
        return leaders

    roots = tuple(split(list(indices)))
    return SpawnTree(roots, children, parent)
