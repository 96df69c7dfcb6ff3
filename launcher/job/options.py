"""LaunchOptions: what a user can ask launch-train for, before anything is looked up.

One field per flag (see launcher.cli for each); None means "the default". Parsing the
flags' small languages (``--env KEY=VALUE``, ``--tee 0,2-3``) lives here too. Turning
options into a JobSpec (looking at the machine and the hosts) is launcher.job.resolve.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from launcher.errors import LaunchError
from launcher.job.hang_policy import DEFAULT_FIRST_STEP_TIMEOUT_S, DEFAULT_HANG_TIMEOUT_S
from launcher.job.platforms import DEFAULT_HCCN_CONF
from launcher.job.ports import check_port
from launcher.job.safe_text import check_env_value, refuse_control, refuse_non_utf8, visible
from launcher.job.spec import check_env_name

MAX_RESTARTS = 1000
MAX_TEE_RANK = 1 << 20


@dataclass(frozen=True)
class LaunchOptions:
    """What a user can ask for; None means "the default" (see launcher.cli for each)."""

    args: tuple[str, ...] = ()
    devices: Optional[int] = None
    visible_devices: Optional[tuple[int, ...]] = None
    hosts: Optional[str] = None
    hostfile: Optional[Path] = None
    platform: Optional[str] = None
    mode: Optional[str] = None
    rank_table: Optional[Path] = None
    hccn_conf: Path = DEFAULT_HCCN_CONF
    sched_port: Optional[int] = None
    master_addr: Optional[str] = None
    entry: Optional[Path] = None
    module: Optional[str] = None
    job_dir: Optional[Path] = None
    env: tuple[tuple[str, str], ...] = ()
    bind_cores: bool = True
    max_restarts: int = 0
    templates: Optional[Path] = None
    tee: str = "0"
    python: Optional[str] = None
    topology_check: bool = True
    hang_timeout_s: Optional[float] = DEFAULT_HANG_TIMEOUT_S
    first_step_timeout_s: Optional[float] = DEFAULT_FIRST_STEP_TIMEOUT_S
    # Set by --submit for the launch inside the batch job: the same job id, and the files it left.
    job_id: Optional[str] = None
    prepared_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.entry is not None and self.module is not None:
            raise LaunchError("--entry and --module: give one of them, not both")
        if not 0 <= self.max_restarts <= MAX_RESTARTS:
            raise LaunchError(f"--max-restarts {self.max_restarts}: must be 0..{MAX_RESTARTS}")
        if self.hosts and self.hostfile:
            raise LaunchError("--hosts and --hostfile: give one of them")
        if self.sched_port is not None:
            check_port(self.sched_port)
        try:
            for name in ("hosts", "hostfile", "platform", "rank_table", "hccn_conf", "master_addr", "entry", "module",
                         "job_dir", "templates", "tee", "python"):
                # job.json, the scripts and every other host read these as UTF-8 text.
                value = getattr(self, name)
                if value is not None:
                    refuse_non_utf8(str(value), "--" + name.replace("_", "-"))
            for key, value in self.env:
                check_env_name(key)
                check_env_value(key, value)
                refuse_non_utf8(value, f"--env {key}")
            for arg in self.args:
                refuse_non_utf8(arg, "training argument")
                if "\x00" in arg:
                    raise ValueError(f"training argument {visible(arg, 60)}: contains a NUL byte, which no "
                                     "command line can hold")
            if self.job_dir is not None:
                refuse_control(str(self.job_dir), "--job-dir")
            if self.hosts is not None:
                refuse_control(self.hosts, "--hosts")
            if self.master_addr is not None:
                # The scheduler's address reaches env.sh comments, hostfiles and other hosts' commands.
                refuse_control(self.master_addr, "--master-addr")
                if not re.fullmatch(r"[A-Za-z0-9_.:%-]+", self.master_addr):
                    raise ValueError(f"--master-addr {self.master_addr[:80]!r}: not a host name or IP address")
        except ValueError as exc:
            raise LaunchError(str(exc)) from None


def new_job_id() -> str:
    """UTC time + a short random suffix: sortable, and unique across launchers started together."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def parse_env_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise LaunchError(f"--env {text[:200]!r}: expected KEY=VALUE")
    try:
        return check_env_name(key), check_env_value(key, value)
    except ValueError as exc:
        raise LaunchError(str(exc)) from None


def parse_tee(text: str) -> Optional[frozenset[int]]:
    """``0,2`` / ``0-3`` / ``all`` / ``none`` -> rank set (None = all ranks)."""
    text = text.strip().lower()
    if text == "all":
        return None
    if text in ("none", ""):
        return frozenset()
    ranks: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise LaunchError(f"--tee {text!r}: expected rank numbers like 0,1 or 0-3, 'all' or 'none'")
        low = int(match.group(1)) if len(match.group(1)) <= 7 else MAX_TEE_RANK + 1
        high = (int(match.group(2)) if len(match.group(2)) <= 7 else MAX_TEE_RANK + 1) if match.group(2) else low
        if high > MAX_TEE_RANK or high < low:
            raise LaunchError(f"--tee {text[:80]!r}: {part.strip()} is not a range of ranks 0..{MAX_TEE_RANK}")
        ranks.update(range(low, high + 1))
    return frozenset(ranks)
