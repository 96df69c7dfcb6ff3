"""The launcher's one atomic writer: whole files or the old ones, usual permissions, no temp files left."""
from __future__ import annotations

import os
import stat

import pytest

from launcher.atomic_write import write_atomic


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
