"""LaunchOptions: what a user can ask launch-train for, before anything is looked up.

One field per flag (see launcher.cli for each); None means "the default". Each field that
has a flag says so in its metadata, which is how ``to_argv()`` rebuilds the command line
that runs the same job inside a Slurm allocation or a pod: from the parsed options, never
by filtering the raw argv. Parsing the flags' small languages (``--env KEY=VALUE``,
``--tee 0,2-3``) lives here too. Turning options into a JobSpec (looking at the machine and
the hosts) is launcher.job.resolve; which backend runs it, launcher.backends.
"""
from __future__ import annotations

import dataclasses
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from launcher.errors import LaunchError
from launcher.job.hang_policy import DEFAULT_FIRST_STEP_TIMEOUT_S, DEFAULT_HANG_TIMEOUT_S
from launcher.job.platforms import DEFAULT_HCCN_CONF
from launcher.job.ports import check_port
from launcher.job.safe_text import check_env_value, refuse_control, refuse_non_utf8, visible
from launcher.job.spec import check_env_name

# What --submit leaves in the job dir before the job itself runs there (Slurm keeps its output open).
SUBMITTED_FILES = ("submit.sbatch", "slurm-*.out")


def flag(name: str, **extra: Any) -> dict:
    """Field metadata: the command-line flag that sets this option (for to_argv)."""
    return {"flag": name, **extra}


MAX_RESTARTS = 1000
MAX_TEE_RANK = 1 << 20


@dataclass(frozen=True)
class LaunchOptions:
    """What a user can ask for; None means "the default" (see launcher.cli for each)."""

    args: tuple[str, ...] = ()
    devices: Optional[int] = field(default=None, metadata=flag("--devices"))
    visible_devices: Optional[tuple[int, ...]] = field(default=None, metadata=flag("--visible-devices"))
    hosts: Optional[str] = field(default=None, metadata=flag("--hosts"))
    # Hosts that take the place of a lost one (launcher/backends/ssh.py), and how few hosts a job may shrink to.
    spare_hosts: Optional[str] = field(default=None, metadata=flag("--spare-hosts"))
    min_hosts: Optional[int] = field(default=None, metadata=flag("--min-hosts"))
    hostfile: Optional[Path] = field(default=None, metadata=flag("--hostfile"))
    platform: Optional[str] = field(default=None, metadata=flag("--platform"))
    mode: Optional[str] = field(default=None, metadata=flag("--mode"))
    rank_table: Optional[Path] = field(default=None, metadata=flag("--rank-table"))
    hccn_conf: Path = field(default=DEFAULT_HCCN_CONF, metadata=flag("--hccn-conf"))
    sched_port: Optional[int] = field(default=None, metadata=flag("--sched-port"))
    master_addr: Optional[str] = field(default=None, metadata=flag("--master-addr"))
    entry: Optional[Path] = field(default=None, metadata=flag("--entry"))
    module: Optional[str] = field(default=None, metadata=flag("--module"))
    job_dir: Optional[Path] = field(default=None, metadata=flag("--job-dir"))
    env: tuple[tuple[str, str], ...] = field(default=(), metadata=flag("--env"))
    bind_cores: bool = field(default=True, metadata=flag("--bind-cores"))
    max_restarts: int = field(default=0, metadata=flag("--max-restarts"))
    templates: Optional[Path] = field(default=None, metadata=flag("--templates"))
    tee: str = field(default="0", metadata=flag("--tee"))
    # The ranks' interpreter (--remote-python: the same path on every host); None: this one's.
    python: Optional[str] = field(default=None, metadata=flag("--remote-python"))
    topology_check: bool = field(default=True, metadata=flag("--topology-check"))
    hang_timeout_s: Optional[float] = field(default=DEFAULT_HANG_TIMEOUT_S, metadata=flag("--hang-timeout"))
    first_step_timeout_s: Optional[float] = field(default=DEFAULT_FIRST_STEP_TIMEOUT_S,
                                                  metadata=flag("--first-step-timeout"))
    status_interval_s: float = field(default=30.0, metadata=flag("--status-interval"))
    # SIGTERM/SIGUSR1 to launch-train: every rank is asked to save a checkpoint and stop, and given this long.
    grace_s: float = field(default=60.0, metadata=flag("--grace"))
    # Who starts the ranks (launcher.backends.select_backend; None: chosen from the environment).
    launcher: Optional[str] = field(default=None, metadata=flag("--launcher"))
    # SSH hosts (launcher.remote): how they are reached and how long their agents wait for us.
    ssh_config: Optional[Path] = field(default=None, metadata=flag("--ssh-config"))
    ssh_key: Optional[Path] = field(default=None, metadata=flag("--ssh-key"))
    ssh_timeout_s: float = field(default=10.0, metadata=flag("--ssh-timeout"))
    ssh_known_hosts: Optional[Path] = field(default=None, metadata=flag("--ssh-known-hosts"))
    ssh_accept_unknown_host_keys: bool = field(default=False, metadata=flag("--ssh-accept-unknown-host-keys"))
    # SSH operations in flight at once (connect, copy, start, probe): the pool bounds the controller, not the host count.
    ssh_parallel: int = field(default=32, metadata=flag("--ssh-parallel"))
    # Above this many remote hosts the controller starts only a first tier of agents, which start the rest.
    ssh_tree_width: Optional[int] = field(default=None, metadata=flag("--ssh-tree-width"))  # None: no tree to 64 hosts, 32 wide above
    heartbeat_timeout_s: float = field(default=30.0, metadata=flag("--heartbeat-timeout"))
    # In a pod (--from-env): whose variables to read, how long to wait for the mounted rank table.
    from_env: bool = field(default=False, metadata=flag("--from-env"))
    k8s_kind: Optional[str] = field(default=None, metadata=flag("--k8s-kind"))
    rank_table_timeout_s: float = field(default=600.0, metadata=flag("--rank-table-timeout"))
    # Set by --submit for the launch inside the batch job: the same job id, and the files it left.
    job_id: Optional[str] = field(default=None, metadata=flag("--job-id"))
    from_submit: bool = field(default=False, metadata=flag("--from-submit"))
    # launch-train --resume JOB_DIR: this job dir's job, continued as its attempt number ``first_attempt``.
    resume: bool = False
    first_attempt: int = 0
    # Print the plan instead of running it (never passed on: the job inside must run).
    dry_run: bool = False
    json: bool = False
    # --submit slurm|k8s and what only the submission uses (never passed on either).
    submit: Optional["SubmitOptions"] = None

    def __post_init__(self) -> None:
        for name in ("hang_timeout_s", "first_step_timeout_s"):
            if getattr(self, name) == 0:
                object.__setattr__(self, name, None)  # 0 and None both turn the watchdog's check off
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
            if self.spare_hosts is not None:
                refuse_control(self.spare_hosts, "--spare-hosts")
            if self.min_hosts is not None and not 1 <= self.min_hosts <= 100_000:
                raise ValueError(f"--min-hosts {self.min_hosts}: must be at least 1")
            if self.master_addr is not None:
                # The scheduler's address reaches env.sh comments, hostfiles and other hosts' commands.
                refuse_control(self.master_addr, "--master-addr")
                if not re.fullmatch(r"[A-Za-z0-9_.:%-]+", self.master_addr):
                    raise ValueError(f"--master-addr {self.master_addr[:80]!r}: not a host name or IP address")
            for name, value, high in (("--status-interval", self.status_interval_s, 86400),
                                      ("--heartbeat-timeout", self.heartbeat_timeout_s, 86400)):
                if not 0 < value <= high:  # NaN and inf fail this too
                    raise ValueError(f"{name} {value}: must be a number of seconds in (0, {high}]")
            if not 0 < self.ssh_timeout_s <= 86400:
                raise ValueError(f"--ssh-timeout {self.ssh_timeout_s}: must be a positive number of seconds")
            if isinstance(self.ssh_parallel, bool) or not isinstance(self.ssh_parallel, int) \
                    or not 1 <= self.ssh_parallel <= 1024:
                raise ValueError(f"--ssh-parallel {self.ssh_parallel}: must be a whole number from 1 to 1024")
            if self.ssh_tree_width is not None and (isinstance(self.ssh_tree_width, bool)
                                                    or not isinstance(self.ssh_tree_width, int)
                                                    or not 0 <= self.ssh_tree_width <= 1024):
                raise ValueError(f"--ssh-tree-width {self.ssh_tree_width}: must be a whole number from 0 (no tree) "
                                 "to 1024")
            if not 0 <= self.grace_s <= 86400:
                raise ValueError(f"--grace {self.grace_s}: must be a number of seconds in [0, 86400] (0: stop at once)")
            if not 0 <= self.rank_table_timeout_s <= 7 * 86400:
                raise ValueError(f"--rank-table-timeout {self.rank_table_timeout_s}: must be a number of seconds "
                                 f"in [0, {7 * 86400}]")
            if self.launcher is not None:
                refuse_control(self.launcher, "--launcher")
        except ValueError as exc:
            raise LaunchError(str(exc)) from None
        if self.json and not self.dry_run:
            raise LaunchError("--json: only with --dry-run")
        if not 0 <= self.first_attempt <= MAX_RESTARTS * 100:
            raise LaunchError(f"attempt {self.first_attempt}: out of range")

    @property
    def prepared_files(self) -> tuple[str, ...]:
        """Files the job dir may already hold: what --submit left there."""
        return SUBMITTED_FILES if self.from_submit else ()

    def to_argv(self) -> list[str]:
        """The launch-train arguments that ask for this same job (inverse of the parser).

        Every option that differs from its default, as ``--flag=value`` (so a value that starts
        with '-' stays a value), then ``--`` and the training arguments unchanged. Never the
        submit-only options, --dry-run or --json: this is the job that runs.
        """
        words: list[str] = []
        for item in dataclasses.fields(self):
            name = item.metadata.get("flag")
            value = getattr(self, item.name)
            if name is None or value == item.default:
                continue
            if value is None:
                words.append(f"{name}=0")  # a timeout that is on by default, turned off
            elif isinstance(value, bool):
                # A flag whose default is on is turned off by its --no- form (--no-bind-cores, --no-topology-check).
                words.append(name if value else "--no-" + name[2:])
            elif item.name == "env":
                words.extend(f"{name}={key}={val}" for key, val in value)
            elif item.name == "visible_devices":
                words.append(f"{name}={','.join(map(str, value))}")
            elif isinstance(value, float):
                words.append(f"{name}={value!r}")
            else:
                words.append(f"{name}={value}")
        return [*words, "--", *self.args]


@dataclass(frozen=True)
class SubmitOptions:
    """--submit slurm|k8s: what only the submission uses; the job itself is the LaunchOptions."""

    target: str  # slurm | k8s
    nodes: int = 1
    partition: Optional[str] = None
    time: Optional[str] = None
    account: Optional[str] = None
    slurm_args: tuple[str, ...] = ()
    wait: bool = False
    image: Optional[str] = None
    namespace: str = "default"
    k8s_set: tuple[str, ...] = ()
    apply: bool = False

    def __post_init__(self) -> None:
        if self.target not in ("slurm", "k8s"):
            raise LaunchError(f"--submit {self.target!r}: use slurm or k8s")


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
