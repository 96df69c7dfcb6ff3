"""SSH connections to the hosts of a job (fabric 3 over paramiko), checked host keys.

``SshOptions`` is what the ssh flags say (``--ssh-config``, ``--ssh-key``,
``--ssh-timeout``, ``--ssh-known-hosts``, ``--ssh-accept-unknown-host-keys``).
``resolve_hosts`` reads the ssh config as OpenSSH does (``Host`` blocks give
``HostName``/``Port``/``User``/``IdentityFile``) and finds each host's address;
``connection`` makes a fabric ``Connection`` whose host key must already be known:
fabric's default would add any unknown key silently, which would make a
man-in-the-middle invisible, so ours rejects unless the user asked otherwise.
``run_on_each`` fans one function out over many connections and returns fabric's
``GroupResult`` (``.succeeded`` / ``.failed``), as ``ThreadingGroup`` does.
"""
from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, TypeVar

import paramiko
from fabric import Config, Connection
from fabric.group import GroupResult

from launcher.job.hosts import HostEntry, check_distinct
from launcher.remote.known_hosts import shared_known_hosts
from launcher.remote.tree import MAX_TREE_WIDTH

DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
T = TypeVar("T")
# SSH operations in flight at once (connect, push, probe, collect): pdsh's default is 32, Slurm's
# TreeWidth 50; 32 (pdsh's) keeps a controller busy with a paramiko transport thread per connection
# being set up beside the pool's own: about 2 x 32 threads at the most, at any host count.
DEFAULT_SSH_PARALLEL = 32
MAX_SSH_PARALLEL = 1024
# Remote commands never read the controller's terminal (invoke mirrors stdin by default).
_RUN_DEFAULTS = {"run": {"in_stream": False}}


@dataclass(frozen=True)
class SshOptions:
    config_file: Optional[Path] = None  # None: ~/.ssh/config and /etc/ssh/ssh_config, as OpenSSH
    key_file: Optional[Path] = None
    timeout_s: float = 10.0
    known_hosts: Optional[Path] = None  # None: UserKnownHostsFile from ssh config, else ~/.ssh/known_hosts
    accept_unknown_host_keys: bool = False
    parallel: int = DEFAULT_SSH_PARALLEL  # --ssh-parallel: SSH operations at once
    tree_width: Optional[int] = None  # --ssh-tree-width (None: launcher.remote.tree's default rule)

    def __post_init__(self) -> None:
        if isinstance(self.parallel, bool) or not isinstance(self.parallel, int) or not 1 <= self.parallel <= MAX_SSH_PARALLEL:
            raise ValueError(f"--ssh-parallel {self.parallel}: must be a whole number from 1 to {MAX_SSH_PARALLEL}")
        if self.tree_width is not None and (isinstance(self.tree_width, bool) or not isinstance(self.tree_width, int)
                                            or not 0 <= self.tree_width <= MAX_TREE_WIDTH):
            raise ValueError(f"--ssh-tree-width {self.tree_width}: must be a whole number from 0 (no tree) to "
                             f"{MAX_TREE_WIDTH}")
        if not 0 < self.timeout_s <= 86400:  # NaN and inf fail this too
            raise ValueError(f"--ssh-timeout {self.timeout_s}: must be a positive number of seconds")
        if self.config_file is not None and not Path(self.config_file).is_file():
            raise ValueError(f"--ssh-config {self.config_file}: no such file")
        if self.key_file is not None and not Path(self.key_file).is_file():
            raise ValueError(f"--ssh-key {self.key_file}: no such file")
        if self.known_hosts is not None and not Path(self.known_hosts).is_file():
            raise ValueError(f"--ssh-known-hosts {self.known_hosts}: no such file")


@dataclass(frozen=True)
class RemoteHost:
    """A host after ssh config: where to connect and as whom."""

    entry: HostEntry
    hostname: str  # HostName from ssh config, else the host as written
    address: str  # IP address the controller reaches it at (others should reach it there too)
    port: int
    user: str
    # The OpenSSH options that apply to this host (lower-case keys); not part of its identity.
    ssh_config: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        """The entry as the user wrote it (with the user), for messages."""
        return self.entry.label

    @property
    def host_name(self) -> str:
        """The host's name in the plan and job.json: host, plus the port when one was written."""
        return self.entry.name


class AcceptForThisRun(paramiko.MissingHostKeyPolicy):
    """--ssh-accept-unknown-host-keys: trust an unknown key for this connection only.

    paramiko's AutoAddPolicy would also rewrite the known_hosts file it loaded, from several
    threads at once; the user's file is left as it is.
    """

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)


def fabric_config(options: SshOptions) -> Config:
    """A fabric Config that loads the ssh config file(s) the way OpenSSH does."""
    try:
        if options.config_file is not None:
            # A runtime path makes fabric skip the system and user files, like `ssh -F`.
            return Config(runtime_ssh_path=str(options.config_file), overrides=_RUN_DEFAULTS)
        return Config(overrides=_RUN_DEFAULTS)
    except Exception as error:  # paramiko raises several types for malformed files
        where = options.config_file or DEFAULT_SSH_CONFIG
        raise ValueError(f"--ssh-config {where}: cannot parse: {error}") from None


def resolve_hosts(entries: Sequence[HostEntry], options: SshOptions, config: Optional[Config] = None) -> list[RemoteHost]:
    """Apply the ssh config to each entry, find its address, reject two entries for one host."""
    config = config or fabric_config(options)
    hosts = []
    for entry in entries:
        ssh_config = dict(config.base_ssh_config.lookup(entry.host))
        hostname = ssh_config.get("hostname", entry.host)
        port = entry.port or int(ssh_config.get("port", 22))
        user = entry.user or ssh_config.get("user") or config.user
        try:
            address = socket.getaddrinfo(hostname, port, type=socket.SOCK_STREAM)[0][4][0]
        except socket.gaierror as error:
            raise ValueError(f"{entry.source}: cannot resolve host {hostname!r}: {error.strerror}") from None
        hosts.append(RemoteHost(entry, hostname, address, port, user, ssh_config))
    by_entry = {host.entry: host for host in hosts}
    check_distinct(entries, resolve=lambda entry: (by_entry[entry].address, by_entry[entry].port))
    return hosts


def known_hosts_path(host: RemoteHost, options: SshOptions) -> Path:
    if options.known_hosts is not None:
        return Path(options.known_hosts)
    configured = host.ssh_config.get("userknownhostsfile")
    if configured:
        # paramiko keeps the raw value; OpenSSH allows several files, the first is the user's.
        return Path(os.path.expanduser(configured.split()[0]))
    return DEFAULT_KNOWN_HOSTS.expanduser()


def connection(host: RemoteHost, options: SshOptions, config: Optional[Config] = None) -> Connection:
    """An unopened fabric Connection with strict host key checking (unless asked not to)."""
    config = config or fabric_config(options)
    connect_kwargs: dict = {
        "banner_timeout": options.timeout_s,
        "auth_timeout": options.timeout_s,
        "channel_timeout": options.timeout_s,
    }
    if options.key_file is not None:
        connect_kwargs["key_filename"] = [str(options.key_file)]
    conn = Connection(
        host.hostname, user=host.user, port=host.port, config=config,
        connect_timeout=max(1, int(round(options.timeout_s))), connect_kwargs=connect_kwargs,
    )
    known = known_hosts_path(host, options)
    if known.is_file():
        # Parsed once per run and shared read-only (launcher.remote.known_hosts): paramiko's own
        # loader is O(N^2) in the file's entries and would run once per connection. A key
        # accepted for this run goes into the client's own (empty) set, so it stays with this
        # connection and the user's file is never written.
        conn.client._system_host_keys = shared_known_hosts(known)  # ValueError: one line
    policy = AcceptForThisRun() if options.accept_unknown_host_keys else paramiko.RejectPolicy()
    conn.client.set_missing_host_key_policy(policy)
    return conn


def describe_ssh_error(error: BaseException, host: RemoteHost, options: SshOptions) -> str:
    """One line saying why the connection to ``host`` failed and what to do."""
    where = f"{host.user}@{host.hostname}:{host.port}"
    if isinstance(error, paramiko.SSHException) and "not found in known_hosts" in str(error):
        return (f"host key of {where} is not in {known_hosts_path(host, options)} "
                f"(add it with ssh-keyscan, or pass --ssh-accept-unknown-host-keys)")
    if isinstance(error, paramiko.BadHostKeyException):
        return f"host key of {where} does not match {known_hosts_path(host, options)}: possible man-in-the-middle"
    if isinstance(error, paramiko.AuthenticationException):
        return f"authentication as {host.user!r} failed on {where} (check --ssh-key / IdentityFile / User)"
    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"no answer from {where} within {options.timeout_s:g}s"
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError):
        causes = list(error.errors.values())
        if causes and all(isinstance(cause, ConnectionRefusedError) for cause in causes):
            return f"connection refused by {where} (is sshd running?)"
        reasons = sorted({getattr(cause, "strerror", None) or str(cause) for cause in causes})
        return f"cannot reach {where}: {'; '.join(reasons) or error}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {where} (is sshd running?)"
    if isinstance(error, OSError):
        return f"cannot reach {where}: {error.strerror or error}"
    return f"{where}: {type(error).__name__}: {error}"


def open_sftp(conn, where: str):
    """The SFTP client of an open connection; ConnectionError with one line when the host has no SFTP.

    paramiko reports a host whose sshd has no ``Subsystem sftp`` only as "Channel closed.".
    """
    try:
        return conn.sftp()
    except paramiko.SSHException as error:
        if "channel closed" in str(error).lower():
            raise ConnectionError(f"{where} refused the SFTP subsystem (its sshd_config has no working "
                                  "'Subsystem sftp' line); collect-results needs it to copy the job's files "
                                  "from the host") from None
        raise ConnectionError(f"{where}: SFTP: {error}") from None
    except EOFError:
        raise ConnectionError(f"{where}: the SSH connection closed while starting SFTP") from None


@dataclass(frozen=True)
class CommandResult:
    exited: int  # -1: the session closed without an exit status (or it runs on: ``channel``)
    stdout: str
    stderr: str
    channel: object = None  # the command's channel, still open: it answered and runs on (``answered``)


def run_command(conn, command: "str | None", timeout_s: float, limit: int = 16 << 20,
                answered: Optional[Callable[[bytes], bool]] = None, stdin: bytes = b"",
                channel=None) -> CommandResult:
    """Run ``command`` on an open connection and read its output, on the calling thread.

    fabric's ``Connection.run`` reads stdout and stderr with a thread each (and a timer thread
    for the timeout): five threads per host with the pool's and paramiko's, 160 at 32 hosts in
    flight. Here one loop waits on the channel's pipe. TimeoutError after ``timeout_s``; at most
    ``limit`` bytes of each stream are kept. ``stdin``: written to the command first, then its
    stdin is closed. ``answered(stdout)``: the command's stdin stays open, and once its output so
    far is the whole answer the command is left running on its channel (``CommandResult.channel``:
    the caller's to use and close). ``channel``: a command already running there (``command`` None).
    """
    import select
    import time

    if channel is None:
        channel = conn.transport.open_session(timeout=timeout_s)
    try:
        deadline = time.monotonic() + timeout_s
        if command is not None:
            channel.exec_command(command)
        if stdin:
            channel.settimeout(timeout_s)
            channel.sendall(stdin)
        if answered is None:
            channel.shutdown_write()  # nothing (more) on its stdin
        out, err = bytearray(), bytearray()
        while True:
            while channel.recv_ready():
                out += channel.recv(65536)
                del out[limit:]
            while channel.recv_stderr_ready():
                err += channel.recv_stderr(65536)
                del err[limit:]
            if answered is not None and answered(bytes(out)):
                kept, channel = channel, None
                return CommandResult(-1, out.decode(errors="replace"), err.decode(errors="replace"), kept)
            if (channel.eof_received or channel.closed) and not channel.recv_ready() \
                    and not channel.recv_stderr_ready():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the command did not finish within {timeout_s:g} s")
            select.select([channel], [], [], min(left, 1.0))  # the channel's pipe: readable on data or EOF
        # The exit status may follow the end of output: waited for until the same deadline, never longer.
        channel.status_event.wait(max(0.0, deadline - time.monotonic()))
        status = channel.recv_exit_status() if channel.exit_status_ready() else -1
        return CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))
    finally:
        if channel is not None:
            channel.close()


def run_on_each(items: Sequence[T], work: Callable[[T], object], key: Callable[[T], object] = lambda item: item,
                parallel: int = DEFAULT_SSH_PARALLEL, thread_name: str = "ssh-pool") -> GroupResult:
    """Run ``work(item)`` for every item, at most ``parallel`` at a time; results (or exceptions) by ``key(item)``.

    The same shape fabric's ThreadingGroup returns, for work that differs per host. The pool,
    not the host count, bounds the threads, sockets and half-open handshakes of a fan-out:
    a thread per host is 1,024 threads at 1,024 hosts (FIELD_NOTES "Many hosts").
    """
    result = GroupResult()
    lock = threading.Lock()
    pending = iter(list(items))

    def run_some() -> None:
        while True:
            with lock:
                item = next(pending, _NOTHING)
            if item is _NOTHING:
                return
            try:
                value = work(item)
            except Exception as error:  # a failure is a result here: the caller reports them all
                value = error
            with lock:
                result[key(item)] = value

    threads = [threading.Thread(target=run_some, daemon=True, name=f"{thread_name}-{index}")
               for index in range(max(1, min(parallel, len(items))))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


_NOTHING = object()
