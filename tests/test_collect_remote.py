"""collect-results over SFTP against real sshd hosts (127.0.0.2, 127.0.0.3).

Both test hosts share this machine's file system, so each host's LOG dirs are put
under a directory of their own (the host's job dir in job.json) that the launch
host's job dir does not contain: the files can only arrive through sshd. The
manifest must say "sftp" with an ssh:// source, the bytes must hash the same, and
the sshd logs must show the SFTP sessions.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from launcher.collect import CollectRequest, collect
from launcher.remote.ssh import SshOptions
from tests.fixtures.sshd import UNREACHABLE_ADDRESS
from tests.fixtures.collect_jobs import RankSpec, make_job, sha256_of


def remote_job(tmp_path: Path, sshd_hosts, extra_hosts: list[dict] | None = None) -> tuple[Path, dict[str, Path]]:
    a, b = sshd_hosts.hosts
    hosts = [{"name": "localhost", "address": "127.0.0.1", "user": None, "port": 22, "local": True, "slots": 1}]
    host_dirs = {}
    for host in (a, b):
        name = host.spec(sshd_hosts.user)
        host_dirs[name] = tmp_path / f"on-{host.address}" / "jobs" / "job-20261126-0001"
        hosts.append({"name": name, "address": host.address, "user": sshd_hosts.user, "port": host.port,
                      "local": False, "slots": 2, "job_dir": str(host_dirs[name])})
    hosts += extra_hosts or []
    ranks = [
        RankSpec(0, host="localhost", losses=[1.0, 0.5]),
        RankSpec(1, host=hosts[1]["name"], losses=[1.1, 0.61], ckpts={"deeplab-1_2.ckpt": 3 << 20}),
        RankSpec(2, host=hosts[1]["name"], losses=[1.2, 0.62]),
        RankSpec(3, host=hosts[2]["name"], losses=[1.3, 0.63], ckpts={"deeplab-1_2.ckpt": 1000}),
    ]
    for extra in extra_hosts or []:
        ranks.append(RankSpec(len(ranks), host=extra["name"], write_dir=False))
    job_dir = make_job(tmp_path / "launch" / "jobs", ranks, hosts=hosts, host_dirs=host_dirs)
    return job_dir, host_dirs


def options(sshd_hosts, **kwargs) -> SshOptions:
    return SshOptions(key_file=sshd_hosts.client_key, known_hosts=sshd_hosts.known_hosts, timeout_s=5, **kwargs)


def test_remote_ranks_come_over_sftp(tmp_path: Path, sshd_hosts):
    job_dir, host_dirs = remote_job(tmp_path, sshd_hosts)
    assert not (job_dir / "LOG1").exists()  # only the remote host dirs have them
    outcome = collect(CollectRequest(job_dir=job_dir, results_root=tmp_path / "results", ssh=options(sshd_hosts),
                                     hash_cache=None))
    assert outcome.exit_status == 0, outcome.problems
    final = outcome.results_dir
    summary = outcome.summary
    assert [r["final_loss"] for r in summary["ranks"]] == [0.5, 0.61, 0.62, 0.63]
    manifest = {e["path"]: e for e in json.loads((final / "manifest.json").read_text())["files"]}
    a, b = sshd_hosts.hosts
    for rank, host, name in ((1, a, a.spec("root")), (2, a, a.spec("root")), (3, b, b.spec("root"))):
        entry = manifest[f"LOG{rank}/log.txt"]
        source = host_dirs[name] / f"LOG{rank}" / "log.txt"
        assert entry["method"] == "sftp"
        assert entry["source"] == f"ssh://root@{host.address}:{host.port}{source}"
        assert entry["sha256"] == sha256_of(source)
    ckpt = "LOG1/ckpt/deeplab-1_2.ckpt"
    remote_ckpt = host_dirs[a.spec("root")] / ckpt
    assert manifest[ckpt]["method"] == "sftp" and manifest[ckpt]["size"] == 3 << 20
    assert (final / ckpt).stat().st_ino != remote_ckpt.stat().st_ino  # a copy, not a link
    assert summary["ranks"][1]["checkpoints"][0]["sha256"] == sha256_of(remote_ckpt) == sha256_of(final / ckpt)
    assert manifest["LOG0/log.txt"]["method"] == "copy" and manifest["job.json"]["method"] == "link"
    hosts = {h["host"]: h for h in summary["collection"]["hosts"]}
    assert hosts[a.spec("root")]["succeeded"] and hosts[a.spec("root")]["files"] == 5  # 2 ranks x (log, env) + ckpt
    for host in (a, b):
        # OpenSSH logs "Starting session: subsystem 'sftp' for root from ...".
        assert re.search(r"subsystem '?sftp", host.log.read_text())


def test_unknown_host_key_and_unreachable_host_are_reported_rest_collected(tmp_path: Path, sshd_hosts):
    dead = {"name": f"root@{UNREACHABLE_ADDRESS}", "address": UNREACHABLE_ADDRESS, "user": "root", "port": 22,
            "local": False, "slots": 1}
    job_dir, _ = remote_job(tmp_path, sshd_hosts, extra_hosts=[dead])
    a, b = sshd_hosts.hosts
    # Only host a's key is known: b must be refused, not silently trusted.
    known = tmp_path / "known_hosts_a"
    known.write_text("".join(line + "\n" for line in sshd_hosts.known_hosts.read_text().splitlines()
                             if line.startswith(a.known_hosts_name + " ")))
    opts = SshOptions(key_file=sshd_hosts.client_key, known_hosts=known, timeout_s=5)
    outcome = collect(CollectRequest(job_dir=job_dir, results_root=tmp_path / "results", ssh=opts, hash_cache=None))
    assert outcome.exit_status == 1
    problems = {(p["kind"], p["host"]) for p in outcome.summary["problems"]}
    assert ("unreachable_host", b.spec("root")) in problems
    assert ("unreachable_host", dead["name"]) in problems
    message = next(p["message"] for p in outcome.summary["problems"] if p["host"] == b.spec("root"))
    assert "host key" in message and str(known) in message
    collected = [r["collected"] for r in outcome.summary["ranks"]]
    assert collected == [True, True, True, False, False]
    assert (outcome.results_dir / "LOG1/ckpt/deeplab-1_2.ckpt").is_file()
    assert not (outcome.results_dir / "LOG3").exists()

    # Accepting unknown keys is explicit, and then host b's ranks arrive too.
    opts = SshOptions(key_file=sshd_hosts.client_key, known_hosts=known, timeout_s=5, accept_unknown_host_keys=True)
    outcome = collect(CollectRequest(job_dir=job_dir, into=tmp_path / "again", ssh=opts, hash_cache=None))
    assert [r["collected"] for r in outcome.summary["ranks"]] == [True, True, True, True, False]
