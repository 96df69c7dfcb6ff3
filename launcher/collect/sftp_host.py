"""Open a remote host's job directory over SFTP, through launcher.remote.ssh's connections.

launcher.remote.ssh applies the ssh config (HostName, Port, User, IdentityFile) and checks
host keys strictly (known_hosts; unknown keys rejected unless
--ssh-accept-unknown-host-keys), so collecting trusts exactly what launching trusted.
"""
from __future__ import annotations

from launcher.job.job_record import JobHost
from launcher.collect.sources import SftpFiles
from launcher.job import hosts as job_hosts
from launcher.remote.ssh import SshOptions, connection, describe_ssh_error, open_sftp, resolve_hosts


class HostUnreachable(ConnectionError):
    """A host could not be connected to; the message is one line saying why."""


def host_uri(host: JobHost, user: str | None = None) -> str:
    user = user or host.user
    return f"ssh://{user + '@' if user else ''}{host.address}:{host.port}"


def open_host_files(host: JobHost, options: SshOptions) -> SftpFiles:
    """SftpFiles over a fresh connection to host; HostUnreachable when that fails."""
    entry = job_hosts.HostEntry(host=host.address, user=host.user or None, port=host.port, source=f"job.json host {host.name}")
    try:
        remote = resolve_hosts([entry], options)[0]
    except ValueError as err:
        raise HostUnreachable(str(err)) from None
    conn = connection(remote, options)
    try:
        conn.open()
    except Exception as err:  # noqa: BLE001 - paramiko/socket raise many types; all mean "unreachable"
        conn.close()
        raise HostUnreachable(describe_ssh_error(err, remote, options)) from None
    try:
        sftp = open_sftp(conn, f"{remote.user}@{remote.hostname}:{remote.port}")
    except ConnectionError as err:
        conn.close()
        raise HostUnreachable(str(err)) from None
    return SftpFiles(host.job_dir, sftp, host_uri(host, remote.user), on_close=conn.close)
