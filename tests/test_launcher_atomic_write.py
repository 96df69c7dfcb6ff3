"""The launcher's one atomic writer: whole files or the old ones, usual permissions, no temp files left; a batch
of files durable together."""
from __future__ import annotations

import os
import stat

import pytest

from launcher.atomic_write import AtomicBatch, write_atomic


def test_replaces_whole_files_with_the_usual_permissions(tmp_path):
    target = tmp_path / "job.json"
    write_atomic(target, "first\n")
    write_atomic(target, b"second\n")
    assert target.read_text() == "second\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    script = write_atomic(tmp_path / "run.sh", "#!/bin/sh\n", executable=True)
    assert stat.S_IMODE(script.stat().st_mode) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json", "run.sh"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "summary.json"
    write_atomic(target, "old\n")
    with pytest.raises(TypeError):
        write_atomic(target, ["not", "text"])  # type: ignore[arg-type]
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_batch_puts_every_file_in_place_at_the_end(tmp_path):
    (tmp_path / "LOG0").mkdir()
    write_atomic(tmp_path / "job.json", "old\n")
    with AtomicBatch() as batch:
        batch.write(tmp_path / "job.json", "new\n")
        batch.write(tmp_path / "LOG0" / "run.sh", "#!/bin/sh\n", executable=True)
        assert (tmp_path / "job.json").read_text() == "old\n"  # nothing is renamed before the end
        assert not (tmp_path / "LOG0" / "run.sh").exists()
    assert (tmp_path / "job.json").read_text() == "new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "LOG0" / "run.sh").stat().st_mode) == 0o777 & ~umask
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["LOG0", "job.json", "run.sh"]


def test_a_failed_batch_changes_nothing_and_leaves_no_temp(tmp_path):
    write_atomic(tmp_path / "job.json", "old\n")
    with pytest.raises(FileNotFoundError):
        with AtomicBatch() as batch:
            batch.write(tmp_path / "job.json", "new\n")
            batch.write(tmp_path / "missing" / "run.sh", "x")
    assert (tmp_path / "job.json").read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["job.json"]


def test_without_syncfs_every_file_is_fsynced_before_its_rename(tmp_path, monkeypatch):
    import launcher.atomic_write as atomic_write

    synced: list[str] = []
    monkeypatch.setattr(atomic_write, "sync_file_system", lambda path: False)
    monkeypatch.setattr(atomic_write, "_fsync_path", lambda path: synced.append(os.path.basename(path)))
    with AtomicBatch() as batch:
        batch.write(tmp_path / "a", "1")
        batch.write(tmp_path / "b", "2")
    assert [name.split(".")[1] for name in synced[:2]] == ["a", "b"]  # the temporary files, then the directory
    assert synced[2:] == [tmp_path.name]
    assert (tmp_path / "a").read_text() == "1" and (tmp_path / "b").read_text() == "2"
