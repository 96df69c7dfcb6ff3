"""collect-results under hostile job directories and failing copies (issue 10, "Why").

Every case runs the real collect-results (as a program where the exit status and the
one stderr line matter) on a job dir built in the launcher's formats, and checks:
the message, the exit status, that the source job dir is unchanged, that the results
hold exactly what manifest.json lists (no partial staging dir, no half-copied file),
and -- through the autouse fixture -- that no process is left.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import psutil
import pytest

import launcher.collect.collection as collection
from launcher.collect import CollectRequest, collect
from launcher.collect.sources import LocalFiles
from tests.faults.conftest import BIN, one_line_error, tree_state
from tests.fixtures.collect_jobs import RankSpec, make_job

CANARY = b"CANARY-SECRET-6f1d0c2e-not-for-the-results"
JOB_ID = "job-20261126-0001"


def run_collect(job_dir: Path, results: Path, timeout_s: float = 60.0, env: dict | None = None):
    return subprocess.run([str(BIN / "collect-results"), str(job_dir), "-o", str(results), "--no-hash-cache"],
                          capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def assert_results_consistent(final: Path) -> dict:
    """The results dir holds exactly the manifest's files (+ its own three), each with the listed size and hash."""
    manifest = json.loads((final / "manifest.json").read_text())
    listed = {e["path"]: e for e in manifest["files"]}
    present = {k: v for k, v in tree_state(final).items() if v[0] != "dir"}
    assert all(kind == "file" for kind, _, _ in present.values()), present  # no link, no special file
    assert set(present) == set(listed) | {"manifest.json", "summary.json", "report.html"}
    for path, entry in listed.items():
        assert present[path][1:] == (entry["size"], entry["sha256"]), path
    assert not [p for p in final.parent.iterdir() if ".partial-" in p.name]
    return listed


def assert_no_canary(final: Path, *secrets: bytes) -> None:
    for path in final.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for secret in secrets:
                assert secret not in data, f"{path} holds secret bytes"


def test_links_out_of_the_job_dir_are_skipped_not_followed(tmp_path: Path):
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(CANARY)
    (outside / "dir" / "log.txt").write_bytes(CANARY)
    job = make_job(tmp_path / "jobs", [RankSpec(0, ckpts={"a.ckpt": 1000}), RankSpec(1), RankSpec(2)])
    links = {
        "LOG0/shadow": "/etc/shadow",
        "LOG0/environ.txt": "/proc/self/environ",
        "LOG0/secret.txt": str(outside / "secret.txt"),
        "LOG0/ckpt/latest.ckpt": "../../../../outside/secret.txt",
        "LOG0/etc": "/etc",
        "hostfile": str(outside / "secret.txt"),
    }
    for rel, target in links.items():
        os.symlink(target, job / rel)
    for rank, target in ((1, "/etc"), (2, str(outside / "dir"))):
        for child in sorted((job / f"LOG{rank}").rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        (job / f"LOG{rank}").rmdir()
        os.symlink(target, job / f"LOG{rank}")
    before = tree_state(job)

    done = run_collect(job, tmp_path / "results", env={"FAULT_CANARY": CANARY.decode()})

    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    final = tmp_path / "results" / JOB_ID
    listed = assert_results_consistent(final)
    shadow = Path("/etc/shadow").read_bytes() if os.access("/etc/shadow", os.R_OK) else b""
    assert_no_canary(final, CANARY, *([shadow] if len(shadow) > 20 else []))
    summary = json.loads((final / "summary.json").read_text())
    skipped = {k["path"]: k for k in summary["skipped"]}
    assert set(skipped) == set(links) | {"LOG1", "LOG2"}
    assert all(k["kind"] == "symbolic link" for k in skipped.values())
    assert skipped["LOG1"]["target"] == "/etc" and skipped["LOG0/shadow"]["target"] == "/etc/shadow"
    assert not set(skipped) & set(listed)
    assert [r["collected"] for r in summary["ranks"]] == [True, False, False]
    kinds = {(p["kind"], p["rank"]) for p in summary["problems"]}
    assert {("skipped_link", 0), ("skipped_link", 1), ("skipped_link", 2)} <= kinds
    assert "LOG1 -> /etc: a symbolic link, not followed; rank 1 was not collected" in done.stderr
    assert "LOG0/ckpt/a.ckpt" in listed and summary["ranks"][0]["checkpoints"][0]["path"] == "LOG0/ckpt/a.ckpt"
    html = (final / "report.html").read_text()
    assert "Skipped (8)" in html and "/etc/shadow" in html  # named, not copied
    assert tree_state(job) == before


def test_special_files_are_skipped_and_never_opened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    job = make_job(tmp_path / "jobs", [RankSpec(0), RankSpec(1)])
    os.mkfifo(job / "LOG0" / "progress.log")  # no writer: a blocking open would wait forever
    os.mkfifo(job / "rank_table.json")
    os.mknod(job / "LOG0" / "ckpt" / "zero.ckpt", 0o644 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: endless
    sock = socket.socket(socket.AF_UNIX)
    monkeypatch.chdir(job / "LOG1")  # a relative name: the absolute path can pass AF_UNIX's 108 bytes
    sock.bind("control.sock")
    monkeypatch.undo()
    try:
        before = tree_state(job)
        done = run_collect(job, tmp_path / "results", timeout_s=60)
    finally:
        sock.close()
    assert done.returncode == 1, done.stderr
    final = tmp_path / "results" / JOB_ID
    assert_results_consistent(final)
    summary = json.loads((final / "summary.json").read_text())
    kinds = {k["path"]: k["kind"] for k in summary["skipped"]}
    assert kinds == {"LOG0/progress.log": "FIFO", "rank_table.json": "FIFO", "LOG0/ckpt/zero.ckpt": "character device",
                     "LOG1/control.sock": "socket"}
    assert {p["kind"] for p in summary["problems"]} == {"skipped_special"}
    assert [r["collected"] for r in summary["ranks"]] == [True, True]
    assert tree_state(job) == before


def test_a_fifo_as_job_json_is_one_line_and_does_not_hang(tmp_path: Path):
    job = tmp_path / "jobs" / "fifo-job"
    job.mkdir(parents=True)
    os.mkfifo(job / "job.json")
    status, out, err = one_line_error(["collect-results", str(job), "-o", str(tmp_path / "results")], timeout_s=30)
    assert status == 2 and out == ""
    assert err == f"collect-results: {job / 'job.json'}: is a FIFO, not a regular file"
    assert not (tmp_path / "results").exists()
    # The default JOB_DIR (newest under ./jobs) reads every job.json: a FIFO among them must not block.
    make_job(tmp_path / "jobs", [RankSpec(0)])
    done = subprocess.run([str(BIN / "collect-results"), "--no-hash-cache"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "results" / JOB_ID / "summary.json").is_file()


def _mutate_rank(field: str, raw: str):
    def mutate(text: str) -> str:
        doc = json.loads(text)
        doc["ranks"][0][field] = "@@"
        return json.dumps(doc).replace('"@@"', raw)
    return mutate


def _mutate(edit):
    def mutate(text: str) -> str:
        doc = json.loads(text)
        edit(doc)
        return json.dumps(doc)
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (lambda t: b"\x89PNG\r\n\x1a\n\x00\x00binary", "not UTF-8 text (byte 0 is 0x89); is it binary?"),
    (lambda t: "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    (lambda t: '{"a":' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    (_mutate_rank("rank", "1e400"), "number 1e400 is out of range"),
    (_mutate_rank("rank", "9" * 5000), "a number with 5000 digits is out of range"),
    (_mutate_rank("rank", "NaN"), "NaN is not a number JSON allows"),
    (_mutate_rank("rank", str(2 ** 70)), "ranks[0].rank: 1180591620717411303424 is out of range 0..1048576"),
    (_mutate_rank("rank", "-3"), "ranks[0].rank: -3 is out of range"),
    (_mutate_rank("rank", "true"), "ranks[0].rank: 'True' is not an integer"),
    (_mutate_rank("device_id", "1e300"), "ranks[0].device_id: "),
    (_mutate(lambda d: d["hosts"][0].update(port=65536)), "hosts[0].port: 65536 is out of range 1..65535"),
    (_mutate(lambda d: d["status"]["ranks"][0].update(exit_code=10 ** 20)), "exit_code: 100000000000000000000 is out of range"),
    (_mutate(lambda d: d["status"]["ranks"][0].update(duration_s=-1)), "duration_s: '-1' is not a duration"),
    (_mutate(lambda d: d["ranks"].append(dict(d["ranks"][0], rank=1))), "log_dir 'LOG0' belongs to more than one rank"),
    (_mutate(lambda d: d.update(ranks=[5])), "ranks[0] is not an object"),
    (_mutate(lambda d: d.update(hosts={"a": 1})), "hosts is not an array"),
    (lambda t: "x" * ((64 << 20) + 1), "larger than 64 MiB"),
], ids=["binary", "deep-array", "deep-object", "rank-1e400", "rank-5000-digits", "rank-NaN", "rank-2**70", "rank-negative",
        "rank-bool", "device-1e300", "port-65536", "exit-code-1e20", "duration-negative", "log-dir-twice",
        "rank-not-object", "hosts-not-array", "huge-file"])
def test_hostile_job_json_is_one_line_exit_2(tmp_path: Path, mutate, message):
    job = make_job(tmp_path / "jobs", [RankSpec(0)])
    text = mutate((job / "job.json").read_text())
    (job / "job.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    before = tree_state(job)
    status, out, err = one_line_error(["collect-results", str(job), "-o", str(tmp_path / "results")])
    assert status == 2 and out == ""
    assert err.startswith(f"collect-results: {job / 'job.json'}: ") and message in err, err
    assert not (tmp_path / "results").exists()
    assert tree_state(job) == before


class _RacingFiles(LocalFiles):
    """The real LocalFiles, with the job dir changing after listing (as a running job or an attacker can)."""

    def fetch(self, item, dest):
        src = Path(self.root, item.rel)
        if item.rel == "LOG0/ckpt/b.ckpt":  # replaced by a directory: the original EISDIR mid-copy
            src.unlink()
            src.mkdir()
        if item.rel == "LOG0/ckpt/c.ckpt":  # swapped for a link to a secret after it was listed
            src.unlink()
            os.symlink(self.secret, src)
        if item.rel == "LOG0/ckpt/d.ckpt":  # another writer took the results path
            dest.mkdir()
        return super().fetch(item, dest)


@pytest.mark.parametrize("allow_links", [True, False])
def test_a_copy_failing_mid_way_is_listed_failed_and_the_host_goes_on(tmp_path: Path, monkeypatch, allow_links):
    (tmp_path / "secret.txt").write_bytes(CANARY)
    job = make_job(tmp_path / "jobs", [
        RankSpec(0, ckpts={"a.ckpt": 5000, "b.ckpt": 6000, "c.ckpt": len(CANARY), "d.ckpt": 7000, "e.ckpt": 8000}),
        RankSpec(1, ckpts={"z.ckpt": 900}),
    ])
    _RacingFiles.secret = str(tmp_path / "secret.txt")
    monkeypatch.setattr(collection, "LocalFiles", _RacingFiles)
    outcome = collect(CollectRequest(job_dir=job, results_root=tmp_path / "results", hash_cache=None,
                                     allow_links=allow_links))
    assert outcome.exit_status == 1
    final = outcome.results_dir
    listed = assert_results_consistent(final)
    assert_no_canary(final, CANARY)
    summary = outcome.summary
    failed = {f["path"]: f["error"] for f in summary["failed_files"]}
    assert set(failed) == {"LOG0/ckpt/b.ckpt", "LOG0/ckpt/c.ckpt", "LOG0/ckpt/d.ckpt"}
    assert "is now a directory" in failed["LOG0/ckpt/b.ckpt"]
    assert "symbolic link" in failed["LOG0/ckpt/c.ckpt"]
    assert "exists" in failed["LOG0/ckpt/d.ckpt"]
    # The loop went on: later files of the same host, and the other rank, arrived verified.
    assert {"LOG0/ckpt/a.ckpt", "LOG0/ckpt/e.ckpt", "LOG0/log.txt", "LOG1/ckpt/z.ckpt"} <= set(listed)
    assert [c["path"] for c in summary["ranks"][0]["checkpoints"]] == ["LOG0/ckpt/a.ckpt", "LOG0/ckpt/e.ckpt"]
    kinds = [p["kind"] for p in summary["problems"]]
    assert kinds.count("copy_failed") == 3 and "unreachable_host" not in kinds and "host_lost" not in kinds
    assert summary["collection"]["hosts"][0]["succeeded"]
    assert "Not collected (3)" in (final / "report.html").read_text()


def _tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path):
    """Mount points for tiny tmpfs file systems under tmp_path; unmounted at the end whatever happened."""
    mounted: list[Path] = []

    def make(name: str, size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system needs root")
        path = tmp_path / name
        _tmpfs(path, size)
        mounted.append(path)
        return path

    yield make
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_results_disk_full_mid_copy_lists_the_file_failed(tmp_path: Path, small_fs):
    results = small_fs("results", "2m")
    # Small files copied beside the big one find the disk full while its partial copy holds the
    # space; they are copied again once it is removed: only the file that cannot fit fails.
    small = {f"small{i}.ckpt": 64 << 10 for i in range(12)}
    job = make_job(tmp_path / "jobs", [RankSpec(0, ckpts={"big.ckpt": 3 << 20, **small}), RankSpec(1)])
    before = tree_state(job)
    done = run_collect(job, results)
    assert done.returncode == 1, done.stderr
    final = results / JOB_ID
    listed = assert_results_consistent(final)
    summary = json.loads((final / "summary.json").read_text())
    assert [f["path"] for f in summary["failed_files"]] == ["LOG0/ckpt/big.ckpt"]
    assert "No space left on device" in summary["failed_files"][0]["error"]
    assert "LOG0/ckpt/big.ckpt" not in listed and all(f"LOG0/ckpt/{name}" in listed for name in small)
    assert "LOG1/log.txt" in listed
    assert tree_state(job) == before


def test_results_disk_too_full_for_the_summary_keeps_nothing(tmp_path: Path, small_fs):
    # job.json, scheduler/log.txt, LOG0/log.txt and LOG0/env.sh take one 4 KiB page each: then it is full.
    results = small_fs("results", "16k")
    job = make_job(tmp_path / "jobs", [RankSpec(0)])
    status, out, err = one_line_error(["collect-results", str(job), "-o", str(results), "--no-hash-cache"])
    assert status == 1
    assert "No space left on device" in err and str(results / JOB_ID) in err and "nothing was kept" in err
    assert list(results.iterdir()) == []
    # The rerun on a disk with room works: nothing half-written is in the way.
    status = subprocess.run([str(BIN / "collect-results"), str(job), "-o", str(tmp_path / "roomy"), "--no-hash-cache"],
                            capture_output=True, timeout=60).returncode
    assert status == 0


def test_evaluation_from_log_lines_only_renders_the_report(tmp_path: Path):
    job = make_job(tmp_path / "jobs", [RankSpec(0, extra_lines=["mIoU = 0.65049"]), RankSpec(1)])
    done = run_collect(job, tmp_path / "results")
    assert done.returncode == 0, done.stderr
    final = tmp_path / "results" / JOB_ID
    summary = json.loads((final / "summary.json").read_text())
    assert summary["evaluation"]["mIoU"] == 0.65049 and summary["evaluation"]["source"].startswith("LOG0")
    html = (final / "report.html").read_text()
    assert "Evaluation: mIoU 0.6505" in html


def _drop_each_optional_field(doc, path=()):
    """Yield (path, copy of doc without that one field) for every optional field."""
    required = {("job_id",), ("ranks",)}
    if isinstance(doc, dict):
        for key in doc:
            here = path + (key,)
            if here not in required and not (len(path) == 2 and path[0] == "ranks" and key == "rank"):
                yield here, here
            yield from _drop_each_optional_field(doc[key], here)
    elif isinstance(doc, list):
        for index, item in enumerate(doc):
            yield from _drop_each_optional_field(item, path + (index,))


def _without(doc, path):
    copy = json.loads(json.dumps(doc))
    target = copy
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return copy


def test_every_optional_field_of_the_report_is_optional(tmp_path: Path):
    from launcher.collect.report import render_report

    job = make_job(tmp_path / "jobs", [
        RankSpec(0, ckpts={"a.ckpt": 100}, eval_miou=0.5, eval_ckpt="a.ckpt", exit_code=1),
        RankSpec(1, exit_code=None, signal="SIGTERM", extra_lines=["mIoU = 0.4"]),
    ], state="failed")
    doc = json.loads((job / "job.json").read_text())
    doc["status"]["hang"] = {"detected": "2026-11-26T05:00:30Z", "kind": "no new step", "timeout_s": 30,
                             "stuck_ranks": [1], "action": "stopped", "message": "rank 1 made no step for 30 s",
                             "ranks": [{"rank": 0, "host": "localhost", "last_step": 4, "seconds_since_progress": 1.0,
                                        "state": "sleeping", "waiting_in": "AllReduce", "stack": "LOG0/stack.txt"},
                                       {"rank": 1, "host": "localhost", "last_step": 2, "seconds_since_progress": 30.5,
                                        "state": "stopped", "waiting_in": "<module> (x.py:1)", "stack": "LOG1/stack.txt"}]}
    (job / "job.json").write_text(json.dumps(doc))
    (job / "LOG1" / "stack.txt").write_text("Thread 1 (idle): \"MainThread\"\n    <module> (x.py:1)\n")
    os.symlink("/etc", job / "LOG0" / "etc")
    outcome = collect(CollectRequest(job_dir=job, results_root=tmp_path / "results", hash_cache=None))
    summary = outcome.summary
    assert summary["hang"]["stuck_ranks"] == [1] and summary["ranks"][1]["stack"] == "LOG1/stack.txt"
    html = (outcome.results_dir / "report.html").read_text()
    assert "Hang: no new step for 30 s" in html and "Stacks of rank 1" in html and "&lt;module&gt; (x.py:1)" in html
    # The full summary rendered above (with its per-class IoU plot); without the plot, each
    # render takes a millisecond instead of a matplotlib figure.
    summary["evaluation"]["per_class_iou"] = {}
    paths = [p for p, _ in _drop_each_optional_field(summary)]
    assert len(paths) > 100
    for path in paths:
        render_report(_without(summary, path), {}, {1: "tail"}, "now", stacks={1: "stack"})


def _sftp_servers(sshd_hosts, host) -> list[psutil.Process]:
    index = sshd_hosts.hosts.index(host)
    try:
        below = psutil.Process(sshd_hosts.processes[index].pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in below if p.name() == "sftp-server"]


def test_an_sftp_session_dying_mid_copy_lists_the_file_failed_never_collected(tmp_path: Path, sshd_hosts):
    a = sshd_hosts.hosts[0]
    name = a.spec(sshd_hosts.user)
    remote_dir = tmp_path / f"on-{a.address}" / "jobs" / JOB_ID
    hosts = [{"name": "localhost", "address": "127.0.0.1", "user": None, "port": 22, "local": True, "slots": 1},
             {"name": name, "address": a.address, "user": sshd_hosts.user, "port": a.port, "local": False,
              "slots": 1, "job_dir": str(remote_dir)}]
    job = make_job(tmp_path / "launch" / "jobs", [RankSpec(0), RankSpec(1, host=name, ckpts={"small.ckpt": 1000})],
                   hosts=hosts, host_dirs={name: remote_dir})
    big = remote_dir / "LOG1" / "ckpt" / "big.ckpt"
    with open(big, "wb") as out:  # large enough that the copy is surely under way when the server dies
        block = os.urandom(1 << 20)
        for _ in range(384):
            out.write(block)
    before = tree_state(remote_dir)
    proc = subprocess.Popen([str(BIN / "collect-results"), str(job), "-o", str(tmp_path / "results"), "--no-hash-cache",
                             "--json", "--ssh-key", str(sshd_hosts.client_key), "--ssh-known-hosts",
                             str(sshd_hosts.known_hosts), "--ssh-timeout", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    killed = []
    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline and proc.poll() is None:
        partial = list((tmp_path / "results").glob(f".{JOB_ID}.partial-*/LOG1/ckpt/big.ckpt"))
        if partial and partial[0].stat().st_size > (8 << 20):
            for server in _sftp_servers(sshd_hosts, a):
                server.kill()
                killed.append(server.pid)
        time.sleep(0.005)
    out, err = proc.communicate(timeout=120)
    assert killed, "the copy finished before the SFTP server could be killed"
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert "host_lost" in err and "SFTP session lost" in err
    final = tmp_path / "results" / JOB_ID
    summary = json.loads(out)
    assert summary == json.loads((final / "summary.json").read_text())
    listed = assert_results_consistent(final)
    failed = {f["path"]: f["error"] for f in summary["failed_files"]}
    assert "LOG1/ckpt/big.ckpt" in failed and "SFTP session lost" in failed["LOG1/ckpt/big.ckpt"]
    assert not (final / "LOG1/ckpt/big.ckpt").exists()
    # Files of the host listed after the lost one are failed too ("not copied"), never half there.
    assert {"LOG1/env.sh", "LOG1/log.txt"} <= set(failed)
    assert "not copied" in failed["LOG1/log.txt"]
    assert not set(failed) & set(listed)
    assert [c["path"] for c in summary["ranks"][1]["checkpoints"]] == [p for p in listed if p.startswith("LOG1/ckpt/")]
    kinds = {p["kind"] for p in summary["problems"]}
    assert {"host_lost", "copy_failed"} <= kinds and "unreachable_host" not in kinds
    assert "LOG0/log.txt" in listed  # the local host was not disturbed
    assert tree_state(remote_dir) == before


def test_a_host_without_sftp_is_named_as_such_not_channel_closed(tmp_path: Path, no_sftp_host):
    name = f"root@{no_sftp_host['address']}:{no_sftp_host['port']}"
    remote_dir = tmp_path / "remote" / JOB_ID
    hosts = [{"name": "localhost", "address": "127.0.0.1", "user": None, "port": 22, "local": True, "slots": 1},
             {"name": name, "address": no_sftp_host["address"], "user": "root", "port": no_sftp_host["port"],
              "local": False, "slots": 1, "job_dir": str(remote_dir)}]
    job = make_job(tmp_path / "jobs", [RankSpec(0), RankSpec(1, host=name)], hosts=hosts, host_dirs={name: remote_dir})
    done = subprocess.run([str(BIN / "collect-results"), str(job), "-o", str(tmp_path / "results"), "--no-hash-cache",
                           "--ssh-key", str(no_sftp_host["key"]), "--ssh-accept-unknown-host-keys", "--ssh-timeout", "5"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "Channel closed" not in done.stderr
    assert f"unreachable_host: host {name}: root@{no_sftp_host['address']}:{no_sftp_host['port']} refused the SFTP " \
           "subsystem (its sshd_config has no working 'Subsystem sftp' line)" in done.stderr
    assert_results_consistent(tmp_path / "results" / JOB_ID)
