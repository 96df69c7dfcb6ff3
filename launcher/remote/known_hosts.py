"""known_hosts read once per run, looked up in constant time: one ``KnownHosts`` shared by every connection.

paramiko's ``HostKeys.load`` checks each new line against every entry before it (O(N^2) in
the file's entries) and fabric's clients load the file once per connection: a 2,048-entry
known_hosts made a 32-host start five times slower (FIELD_NOTES "Many hosts"). Here the
file is parsed once per path and process (``shared_known_hosts``), plain host names go
into a dict, and only hashed entries (``|1|salt|hash``, which cannot be indexed without
the name) are tried one by one. A key accepted with --ssh-accept-unknown-host-keys is
added to the shared copy for this run only; the user's file is never written.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from hccl.text_file import read_regular_bytes

# A known_hosts this big is not one a person keeps: refuse it rather than hold it in memory.
MAX_KNOWN_HOSTS_BYTES = 64 << 20


class HostKeyMatch(dict):
    """keytype -> key for one host; ``keys()`` is a list because paramiko's client indexes it."""

    def keys(self):  # type: ignore[override]
        return list(super().keys())


class KnownHosts(paramiko.HostKeys):
    """A paramiko HostKeys with a linear load and an indexed lookup; safe to share between threads."""

    def __init__(self, filename: Optional[str] = None) -> None:
        self._by_name: dict[str, list[HostKeyEntry]] = {}
        self._hashed: list[HostKeyEntry] = []
        # Names already looked up: a hashed entry costs an HMAC per lookup, and each host is looked
        # up by pre-flight, the agent's connection and collect-results.
        self._found: dict[str, Optional[HostKeyMatch]] = {}
        self._lock = threading.Lock()
        super().__init__(filename)  # paramiko's __init__ calls load(filename) when given

    def load(self, filename: str) -> None:
        """Parse the file's lines once, in order; lines paramiko cannot read are skipped, as paramiko does."""
        text = read_regular_bytes(filename, MAX_KNOWN_HOSTS_BYTES).decode(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = HostKeyEntry.from_line(line, number)
            except (paramiko.SSHException, InvalidHostKey, ValueError):  # a key type paramiko lacks, a damaged line
                continue
            if entry is not None:
                self._index(entry)

    def _index(self, entry: HostKeyEntry) -> None:
        with self._lock:
            self._found.clear()
            self._entries.append(entry)
            for name in entry.hostnames:
                if name.startswith("|1|"):
                    self._hashed.append(entry)
                else:
                    self._by_name.setdefault(name, []).append(entry)

    def add(self, hostname: str, keytype: str, key: paramiko.PKey) -> None:
        """Remember a key for this run (an accepted unknown host); the first key of a type wins, as OpenSSH."""
        self._index(HostKeyEntry([hostname], key))

    def lookup(self, hostname: str) -> Optional[HostKeyMatch]:
        with self._lock:
            if hostname in self._found:
                known = self._found[hostname]
                return HostKeyMatch(known) if known is not None else None
            candidates = list(self._by_name.get(hostname, ()))
            hashed = list(self._hashed)
        for entry in hashed:
            if any(name.startswith("|1|") and self.hash_host(hostname, name) == name for name in entry.hostnames):
                candidates.append(entry)
        found = HostKeyMatch()
        for entry in candidates:
            # paramiko answers rsa-sha2-* lookups from an ssh-rsa line too.
            found.setdefault(entry.key.get_name(), entry.key)
            if entry.key.get_name() == "ssh-rsa":
                for alias in ("rsa-sha2-256", "rsa-sha2-512"):
                    found.setdefault(alias, entry.key)
        with self._lock:
            self._found[hostname] = HostKeyMatch(found) if found else None
        return found or None

    def check(self, hostname: str, key: paramiko.PKey) -> bool:
        found = self.lookup(hostname)
        return found is not None and found.get(key.get_name()) == key


# One entry per known_hosts file a run uses (one in practice; one per UserKnownHostsFile at most).
_cache: dict[tuple[str, int, int], KnownHosts] = {}
_cache_lock = threading.Lock()


def shared_known_hosts(path: Path) -> KnownHosts:
    """The parsed known_hosts at ``path``, the same object for every connection of this process.

    Keyed by the file's identity and size too, so a file replaced meanwhile (a test writing a
    new one, ssh-keyscan run between two launches from one Python) is read again.
    ValueError with one line when the file cannot be read.
    """
    resolved = os.path.realpath(path)
    try:
        stat = os.stat(resolved)
    except OSError as error:
        raise ValueError(f"known_hosts file {path}: cannot read: {error.strerror or error}") from None
    key = (resolved, stat.st_ino, stat.st_mtime_ns ^ stat.st_size)
    with _cache_lock:
        known = _cache.get(key)
        if known is None:
            known = KnownHosts()
            try:
                known.load(resolved)
            except (OSError, ValueError) as error:
                raise ValueError(f"known_hosts file {path}: cannot read: {error}") from None
            _cache[key] = known
        return known
