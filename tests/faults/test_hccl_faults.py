"""gen-rank-table under hostile outputs and inputs (issue 10, "Why"): one line, exit 2, nothing replaced."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.faults.conftest import BIN, one_line_error, tree_state

GENERATE = ["gen-rank-table", "--visible-devices", "0,1", "--device-num", "[0,2)", "--server-ip", "10.1.1.1"]


@pytest.fixture
def hccn_conf(tmp_path: Path) -> Path:
    path = tmp_path / "hccn.conf"
    path.write_text("address_0=10.0.0.10\naddress_1=10.0.0.11\n")
    return path


def _device(path: Path) -> None:
    os.mknod(path, 0o644 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is


@pytest.mark.parametrize("make, kind", [
    (lambda p, t: _device(p), "is a character device"),
    (lambda p, t: p.mkdir(), "is a directory"),
    (lambda p, t: os.mkfifo(p), "is a FIFO"),
    (lambda p, t: os.symlink("/dev/null", p), "is a symbolic link to a character device"),
    (lambda p, t: (t / "d").mkdir() or os.symlink(t / "d", p), "is a directory"),
    (lambda p, t: os.mkfifo(t / "f") or os.symlink(t / "f", p), "is a symbolic link to a FIFO"),
    (lambda p, t: os.symlink(t / "nowhere", p), "is a dangling symbolic link"),
], ids=["device", "directory", "fifo", "link-to-device", "link-to-directory", "link-to-fifo", "dangling-link"])
def test_force_replaces_only_a_regular_file(tmp_path: Path, hccn_conf: Path, make, kind):
    if os.geteuid() != 0 and "device" in kind:
        pytest.skip("mknod needs root")
    work = tmp_path / "out"
    work.mkdir()
    target = work / "table.json"
    make(target, work)
    before = tree_state(work)
    status, out, err = one_line_error([*GENERATE, "--hccn-conf", str(hccn_conf), "-o", str(target), "--force"])
    assert status == 2 and out == ""
    assert err.startswith(f"gen-rank-table: {target}: ") and kind in err, err
    assert tree_state(work) == before  # nothing replaced, no temporary file left


def test_force_replaces_a_regular_file_and_a_link_to_one_replaces_the_link(tmp_path: Path, hccn_conf: Path):
    target = tmp_path / "table.json"
    target.write_text("old")
    real = tmp_path / "real.json"
    real.write_text("kept")
    link = tmp_path / "link.json"
    os.symlink(real, link)
    for path in (target, link):
        done = subprocess.run([str(BIN / GENERATE[0]), *GENERATE[1:], "--hccn-conf", str(hccn_conf), "-o", str(path),
                               "--force"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert '"server_count": "1"' in path.read_text() and not path.is_symlink()
    assert real.read_text() == "kept"  # the link's target was not written through


@pytest.mark.parametrize("text, message", [
    ('{"version": "1.0", "server_count": ' + "9" * 5000 + "}", "a number with 5000 digits is out of range"),
    ('{"version": "1.0", "server_count": 1e400}', "number 1e400 is out of range"),
    ('{"version": "1.0", "server_count": NaN}', "NaN is not a number JSON allows"),
    ("[" * 100_000, "nested too deeply"),
], ids=["5000-digits", "1e400", "NaN", "deep"])
def test_hostile_numbers_in_a_rank_table_are_one_line(tmp_path: Path, text: str, message: str):
    table = tmp_path / "table.json"
    table.write_text(text)
    for args in (["gen-rank-table", "check", str(table)], ["gen-rank-table", "merge", str(table), "-o", str(tmp_path / "m.json")]):
        status, out, err = one_line_error(args)
        assert status == 2 and out == ""
        assert err.startswith(f"gen-rank-table: {table}: ") and message in err, err
    assert not (tmp_path / "m.json").exists()


def test_a_fifo_as_rank_table_or_hccn_conf_is_one_line_and_does_not_block(tmp_path: Path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    status, _, err = one_line_error(["gen-rank-table", "check", str(fifo)], timeout_s=30)
    assert status == 2 and err == f"gen-rank-table: {fifo}: is a FIFO, not a rank table"
    status, _, err = one_line_error([*GENERATE, "--hccn-conf", str(fifo), "-o", str(tmp_path / "t.json")], timeout_s=30)
    assert status == 2 and err == f"gen-rank-table: {fifo}: is a FIFO, not an hccn.conf file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
