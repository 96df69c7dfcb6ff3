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
from launcher.job.platforms import DEFAULT_HCCN_CONF
from launcher.job.spec import check_env_name


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
    # Set by --submit for the launch inside the batch job: the same job id, and the files it left.
    job_id: Optional[str] = None
    prepared_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.entry is not None and self.module is not None:
            raise LaunchError("--entry and --module: give one of them, not both")
        if self.max_restarts < 0:
            raise LaunchError(f"--max-restarts {self.max_restarts}: must be 0 or more")
        if self.hosts and self.hostfile:
            raise LaunchError("--hosts and --hostfile: give one of them")


def new_job_id() -> str:
    """UTC time + a short random suffix: sortable, and unique across launchers started together."""
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def parse_env_assignment(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise LaunchError(f"--env {text!r}: expected KEY=VALUE")
    try:
        return check_env_name(key), value
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
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        ranks.update(range(low, high + 1))
    return frozenset(ranks)
