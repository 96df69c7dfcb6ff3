"""JobSpec: a fully resolved launch request (everything the plan needs, nothing left to look up).

The CLI (or a Python caller) resolves flags into a JobSpec: platform detected, devices
checked, port picked, rank table loaded. From there on everything is a pure function of it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional

from launcher.job.hang_policy import HangPolicy
from launcher.job.hosts import Host
from launcher.job.platforms import MODES, PLATFORMS

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
DEFAULT_MODULE = "deeplab.train"


@dataclass(frozen=True)
class Entry:
    """What each rank runs: ``python -m module`` or ``python script``."""

    module: Optional[str] = None
    script: Optional[Path] = None

    def __post_init__(self) -> None:
        if (self.module is None) == (self.script is None):
            raise ValueError("entry: give exactly one of module or script")
        if self.module is not None and not _MODULE_NAME.match(self.module):
            raise ValueError(f"--module {self.module!r}: not a Python module name")
        if self.script is not None and not Path(self.script).is_absolute():
            raise ValueError(f"--entry {self.script}: the plan needs an absolute path")

    def argv(self, python: str) -> tuple[str, ...]:
        if self.module is not None:
            return (python, "-m", self.module)
        return (python, str(self.script))

    def to_json(self) -> dict[str, str]:
        return {"module": self.module} if self.module is not None else {"script": str(self.script)}


def check_env_name(name: str) -> str:
    # fullmatch: with match() and "$", "A\n" (a newline in the key) passed and broke env.sh.
    if not _ENV_NAME.fullmatch(name):
        raise ValueError(f"--env {name!r}: not a valid environment variable name")
    return name


@dataclass(frozen=True)
class JobSpec:
    """A launch request with every choice made.

    devices: device ids used on every host (CPU: rank slots 0..N-1).
    sched_port: the scheduler's port (dynamic mode only).
    rank_table: an hccl RankTable (rank-table mode only); rank_table_json: the exact text
        written to <job-dir>/rank_table.json.
    python: the interpreter every rank runs (the launcher's own for local hosts).
    tee: ranks whose output is also printed on the console.
    hang: the hang watchdog's timeouts (the platform's own timeouts are set to agree).
    """

    job_id: str
    job_dir: Path
    created: str
    hosts: tuple[Host, ...]
    devices: tuple[int, ...]
    platform: str
    mode: str
    entry: Entry
    python: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    bind_cores: bool = True
    max_restarts: int = 0
    templates_dir: Optional[Path] = None
    tee: frozenset[int] = frozenset({0})
    sched_port: Optional[int] = None
    rank_table: Optional[Any] = field(default=None, compare=False)
    rank_table_json: Optional[str] = None
    hang: HangPolicy = field(default_factory=HangPolicy)
    # Files --submit put into the job dir before this launch (the batch script, Slurm's output):
    # names (fnmatch patterns) the launch keeps instead of refusing a non-empty job dir.
    prepared_files: tuple[str, ...] = ()
    # On SIGTERM/SIGUSR1: how long every rank may take to save a checkpoint and stop (0: stop at once).
    save_grace_s: float = 0.0
    # The attempt number of this launch's first attempt: 0, or more when it continues a job (--resume).
    first_attempt: int = 0
    # The launch-train arguments of this job (LaunchOptions.to_argv()): what --resume runs again.
    argv: tuple[str, ...] = ()
    # The job's rank count as first planned, when it now runs on fewer hosts (--min-hosts): every
    # rank is told (LAUNCH_TRAIN_PLANNED_RANKS) so the trainer keeps the job's global batch.
    planned_rank_size: Optional[int] = None

    def __post_init__(self) -> None:
        if not re.match(r"^[A-Za-z0-9_.-]+\Z", self.job_id):
            raise ValueError(f"job id {self.job_id!r}: use letters, digits, '.', '-', '_' only")
        if not Path(self.job_dir).is_absolute():
            raise ValueError(f"--job-dir {self.job_dir}: the plan needs an absolute path")
        if self.platform not in PLATFORMS:
            raise ValueError(f"--platform {self.platform!r}: use one of {', '.join(PLATFORMS)}")
        if self.mode not in MODES:
            raise ValueError(f"--mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not self.hosts:
            raise ValueError("--hosts: at least one host is needed")
        if not self.devices:
            raise ValueError("--devices: at least one device per host is needed")
        if len(set(self.devices)) != len(self.devices) or any(d < 0 for d in self.devices):
            raise ValueError(f"devices {self.devices}: ids must be distinct and non-negative")
        if self.max_restarts < 0:
            raise ValueError(f"--max-restarts {self.max_restarts}: must be 0 or more")
        if self.mode == "dynamic" and self.sched_port is None:
            raise ValueError("dynamic mode needs a scheduler port (--sched-port)")
        if self.sched_port is not None and not 0 < self.sched_port < 65536:
            raise ValueError(f"--sched-port {self.sched_port}: not in 1..65535")
        if self.mode == "rank-table" and (self.rank_table is None or self.rank_table_json is None):
            raise ValueError("rank-table mode needs a rank table (--rank-table or --hccn-conf)")
        for key, value in self.env.items():
            check_env_name(key)
            if not isinstance(value, str):
                raise ValueError(f"--env {key}: value must be a string")
            if "\x00" in value:
                raise ValueError(f"--env {key}: the value contains a NUL byte, which no environment can hold")
        if any(not isinstance(a, str) for a in self.args):
            raise ValueError("training args must be strings")
        size = self.rank_size
        bad_tee = sorted(r for r in self.tee if not 0 <= r < size)
        if bad_tee:
            raise ValueError(f"--tee {','.join(map(str, bad_tee))}: the job has ranks 0..{size - 1}")
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        object.__setattr__(self, "tee", frozenset(self.tee))

    @property
    def rank_size(self) -> int:
        return len(self.hosts) * len(self.devices)
