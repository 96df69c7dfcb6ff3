"""The files a host is sent down its agent's channel (launcher.remote.file_stream): exact, atomic, strict."""
import io
import json
import stat

import pytest

from launcher.remote.file_stream import encode_files, receive_files
from launcher.remote.host_slice import PushedFile


def test_files_round_trip_and_the_lines_after_them_stay_unread(tmp_path):
    files = [PushedFile("LOG0/env.sh", "export RANK_ID=0\n"), PushedFile("LOG0/run.sh", "#!/bin/sh\necho é\n", True),
             PushedFile("agents/host-3.json", "{}\n")]
    stream = io.BufferedReader(io.BytesIO(encode_files(files) + b"ping\nstop 5\n"))
    assert receive_files(stream, tmp_path / "job") == 3
    assert (tmp_path / "job/LOG0/run.sh").read_text() == "#!/bin/sh\necho é\n"
    assert stat.S_IMODE((tmp_path / "job/LOG0/run.sh").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "job/LOG0/env.sh").stat().st_mode) == 0o644
    assert (tmp_path / "job/agents/host-3.json").read_text() == "{}\n"
    assert stream.read() == b"ping\nstop 5\n"  # the protocol's lines are the agent's, not the receiver's
    assert sorted(p.name for p in (tmp_path / "job/LOG0").iterdir()) == ["env.sh", "run.sh"]  # no temporary left


def test_an_existing_file_is_replaced_whole(tmp_path):
    (tmp_path / "LOG0").mkdir()
    (tmp_path / "LOG0/env.sh").write_text("old\n")
    receive_files(io.BytesIO(encode_files([PushedFile("LOG0/env.sh", "new\n")])), tmp_path)
    assert (tmp_path / "LOG0/env.sh").read_text() == "new\n"


@pytest.mark.parametrize("entry, message", [
    (["/etc/passwd", 1, False], "not a path inside the job dir"),
    (["../outside", 1, False], "not a path inside the job dir"),
    (["LOG0//env.sh", 1, False], "not a path inside the job dir"),
    (["LOG0/./env.sh", 1, False], "not a path inside the job dir"),
    (["", 1, False], "not a path inside the job dir"),
    (["a\u0000b", 1, False], "not a path inside the job dir"),
    (["LOG0/env.sh", -1, False], "expected \\[path, size, executable\\]"),
    (["LOG0/env.sh", True, False], "expected \\[path, size, executable\\]"),
    (["LOG0/env.sh", 1, 1], "expected \\[path, size, executable\\]"),
    (["LOG0/env.sh", 5 << 30, False], "more than 4 GiB"),
])
def test_a_header_naming_anything_else_is_refused_before_anything_is_written(tmp_path, entry, message):
    stream = io.BytesIO(b"files " + json.dumps([entry]).encode() + b"\nx")
    with pytest.raises(ValueError, match=message):
        receive_files(stream, tmp_path / "job")
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize("data, message", [
    (b"", "cut off"),
    (b"files [1, 2", "cut off"),
    (b"ping\n", "expected a files header first"),
    (b"files {]\n", "not JSON"),
    (b'files {"a": 1}\n', "not a list"),
])
def test_a_missing_or_malformed_header_is_one_clear_error(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        receive_files(io.BytesIO(data), tmp_path)


def test_a_stream_that_ends_early_leaves_no_partial_file(tmp_path):
    data = encode_files([PushedFile("LOG0/env.sh", "a" * 100), PushedFile("LOG0/run.sh", "b" * 100)])
    with pytest.raises(ValueError, match="ended 40 bytes before the end of LOG0/run.sh"):
        receive_files(io.BytesIO(data[:-40]), tmp_path)
    assert (tmp_path / "LOG0/env.sh").read_text() == "a" * 100  # whole files stay: each one is atomic
    assert [p.name for p in (tmp_path / "LOG0").iterdir()] == ["env.sh"]  # no run.sh, whole or partial
