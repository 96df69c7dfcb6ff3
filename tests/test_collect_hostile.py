"""collect-results against a job dir someone prepared: hard links to secrets, results inside the job."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.collect import CollectInputError, CollectRequest, collect
from tests.fixtures.collect_jobs import RankSpec, make_job

OLD = 1_600_000_000  # 2020: long before any job here started


@pytest.fixture
def job(tmp_path: Path) -> Path:
    return make_job(tmp_path / "jobs", [RankSpec(0, losses=[1.0, 0.8, 0.6], steps_per_epoch=3)])


def secret(tmp_path: Path, name: str = "id_rsa", mode: int = 0o600, mtime: float = OLD) -> Path:
    path = tmp_path / "home" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("-----BEGIN PRIVATE KEY-----\n")
    path.chmod(mode)
    os.utime(path, (mtime, mtime))
    return path


def collected(tmp_path: Path, job: Path) -> tuple[Path, dict]:
    outcome = collect(CollectRequest(job_dir=job, into=tmp_path / "results", hash_cache=None))
    return outcome.results_dir, outcome.summary


def test_a_hard_link_to_an_old_secret_is_not_collected_and_is_noted(tmp_path, job):
    # (a symbolic link was never followed; a hard link is the secret's inode itself)
    os.link(secret(tmp_path), job / "LOG0" / "notes.txt")
    results, summary = collected(tmp_path, job)
    assert not (results / "LOG0" / "notes.txt").exists()
    assert (results / "LOG0" / "log.txt").is_file()  # the rest is collected
    assert any("LOG0/notes.txt" in p["message"] and "hard link" in p["message"] for p in summary["problems"]), \
        summary["problems"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_hard_link_to_another_users_file_is_not_collected_however_new(tmp_path, job):
    other = secret(tmp_path, mtime=os.path.getmtime(job / "job.json"), mode=0o644)
    os.chown(other, 65534, 65534)
    os.link(other, job / "LOG0" / "theirs.txt")
    results, _ = collected(tmp_path, job)
    assert not (results / "LOG0" / "theirs.txt").exists()


def test_files_the_job_wrote_are_collected_although_an_earlier_collection_linked_them(tmp_path):
    job = make_job(tmp_path / "jobs", [RankSpec(0, losses=[1.0, 0.8], steps_per_epoch=2,
                                                ckpts={"deeplab-1_2.ckpt": 4096})])
    ckpt = next((job / "LOG0").rglob("deeplab-1_2.ckpt"))
    ckpt.chmod(0o400)  # as MindSpore writes checkpoints: private mode, like a secret
    first = collect(CollectRequest(job_dir=job, into=tmp_path / "first", hash_cache=None)).results_dir
    assert os.stat(ckpt).st_nlink == 2  # collect-results hard-linked it
    results, _ = collected(tmp_path, job)
    assert (results / ckpt.relative_to(job)).is_file()
    assert sorted(p.relative_to(results) for p in (results / "LOG0").rglob("*") if p.is_file()) == \
        sorted(p.relative_to(first) for p in (first / "LOG0").rglob("*") if p.is_file())


@pytest.mark.parametrize("inside", ["results", "LOG0/results", "."])
def test_a_results_dir_inside_the_job_dir_is_refused(tmp_path, job, inside):
    before = sorted(job.rglob("*"))
    with pytest.raises(CollectInputError, match="inside the job directory"):
        collect(CollectRequest(job_dir=job, into=job / inside, hash_cache=None))
    assert sorted(job.rglob("*")) == before


def test_the_default_results_dir_inside_the_job_dir_is_refused_in_one_line(job, monkeypatch, capsys):
    from launcher.collect.cli import main

    monkeypatch.chdir(job / "LOG0")  # ./results would be inside the job
    assert main([str(job), "--no-hash-cache"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--results-dir" in err and "inside the job directory" in err, err
    assert not (job / "LOG0" / "results").exists()


def test_a_file_swapped_for_a_hard_link_to_a_secret_after_listing_is_not_read(tmp_path, job):
    from launcher.collect.hashing import HashCache
    from launcher.collect.listing import NotRegular
    from launcher.collect.sources import LocalFiles

    files = LocalFiles(str(job), HashCache(None), made_since=None)
    listed = next(f for f in files.walk("LOG0").files if f.rel == "LOG0/env.sh")
    (job / "LOG0" / "env.sh").unlink()
    os.link(secret(tmp_path), job / "LOG0" / "env.sh")
    (tmp_path / "out").mkdir()
    with pytest.raises(NotRegular, match="hard link"):
        files.fetch(listed, tmp_path / "out" / "env.sh")
    assert not (tmp_path / "out" / "env.sh").exists()
