"""Open a remote host's job directory over SFTP (fabric/paramiko), host keys checked.

fabric's default accepts any host key; collecting must not: the host key has to be
in a known_hosts file (the user's, the system's, or --known-hosts FILE) unless the
user explicitly passes --accept-unknown-host-keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from launcher.collect.jobfile import HostEntry
from launcher.collect.sources import SftpFiles


@dataclass(frozen=True)
class SshOptions:
    identity_file: Path | None = None
    known_hosts: tuple[Path, ...] = field(default_factory=tuple)
    accept_unknown_host_keys: bool = False
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0:
            raise ValueError(f"connect timeout must be positive, got {self.connect_timeout_s}")


def host_uri(host: HostEntry) -> str:
    user = f"{host.user}@" if host.user else ""
    return f"ssh://{user}{host.address}:{host.port}"


def connect(host: HostEntry, options: SshOptions):
    """An open fabric Connection to host with strict host-key checking."""
    import paramiko
    from fabric import Connection

    connect_kwargs: dict = {"timeout": options.connect_timeout_s, "banner_timeout": options.connect_timeout_s,
                            "auth_timeout": options.connect_timeout_s}
    if options.identity_file is not None:
        connect_kwargs["key_filename"] = str(options.identity_file)
    conn = Connection(
        host.address,
        user=host.user or None,
        port=host.port,
        connect_timeout=max(1, int(options.connect_timeout_s)),
        connect_kwargs=connect_kwargs,
    )
    client = conn.client
    client.load_system_host_keys()
    for path in options.known_hosts:
        client.load_host_keys(str(path))
    policy = paramiko.AutoAddPolicy() if options.accept_unknown_host_keys else paramiko.RejectPolicy()
    client.set_missing_host_key_policy(policy)
    conn.open()
    return conn


def open_host_files(host: HostEntry, options: SshOptions) -> SftpFiles:
    conn = connect(host, options)
    try:
        sftp = conn.sftp()
    except Exception:
        conn.close()
        raise
    return SftpFiles(host.job_dir, sftp, host_uri(host), on_close=conn.close)
