"""launch-train --from-env against hostile mounts and variables: never a hang, never a traceback.

What can never become a complete rank table (a FIFO, /dev/zero, a byte-order mark, bytes that
are not UTF-8, JSON nested 100k deep or with a 5000-digit number) is one line at once, not
after --rank-table-timeout; a timeout that is not a finite number of seconds is refused; a bad
operator variable is named.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.test_k8s_from_env import PAYLOAD, from_env, pod_job  # noqa: F401  (pod_job: fixture)

ASCEND_POD = {"MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "10.0.0.5", "MS_SCHED_PORT": "2222", "MS_NODE_RANK": "0",
              "MS_WORKER_NUM": "8", "MS_LOCAL_WORKER": "8"}
TIMEOUT_S = "30"  # far longer than any of these may take


def ascend_from_env(job_dir: Path, table: Path, *extra: str, env: dict | None = None):
    return from_env({**ASCEND_POD, "RANK_TABLE_FILE": str(table), **(env or {})}, "--k8s-kind", "ascendjob",
                    "--platform", "Ascend", "--entry", PAYLOAD, "--job-dir", str(job_dir), *extra, timeout=60)


def assert_one_line(done, *needles: str) -> str:
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "hccl.json"
    os.mkfifo(path)
    return path


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "hccl.json"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (_fifo, "is a FIFO, not a rank table"),
    (lambda tmp_path: Path("/dev/zero"), "is a character device, not a rank table"),
    (lambda tmp_path: _file(tmp_path, b'\xef\xbb\xbf{"status": "completed"}'), "byte-order mark"),
    (lambda tmp_path: _file(tmp_path, b'{"status": "completed", "x": "\xff\xfe"}'), "not UTF-8"),
    (lambda tmp_path: _file(tmp_path, b"[" * 100_000 + b"]" * 100_000), "nested too deeply"),
    (lambda tmp_path: _file(tmp_path, b'{"status": "completed", "server_count": ' + b"9" * 5000 + b"}"),
     "a number with 5000 digits is out of range"),
])
def test_a_mount_that_can_never_be_a_table_is_one_line_at_once(pod_job, tmp_path, make, message):  # noqa: F811
    table = make(tmp_path)
    started = time.monotonic()
    done = ascend_from_env(pod_job, table, "--rank-table-timeout", TIMEOUT_S)
    assert time.monotonic() - started < 20, "waited for the timeout instead of refusing at once"
    assert_one_line(done, f"RANK_TABLE_FILE {table}", message)
    assert not pod_job.exists()


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "1e400", "３"])
def test_a_rank_table_timeout_that_is_not_seconds_is_refused(pod_job, tmp_path, value):  # noqa: F811
    done = ascend_from_env(pod_job, _file(tmp_path, b'{"status": "initializing"}'), "--rank-table-timeout", value)
    assert done.returncode == 2
    assert done.stderr.startswith("launch-train: error: argument --rank-table-timeout: ")
    assert len(done.stderr.splitlines()) == 1 and not pod_job.exists()


@pytest.mark.parametrize("env, message", [
    ({"ASCEND_VISIBLE_DEVICES": "0-99999999999"}, "ASCEND_VISIBLE_DEVICES='0-99999999999'"),
    ({"ASCEND_VISIBLE_DEVICES": "0,¹"}, "ASCEND_VISIBLE_DEVICES='0,¹'"),
    ({"MS_NODE_RANK": "¹"}, "MS_NODE_RANK='¹': expected a whole number"),
])
def test_bad_ascend_operator_variables_are_named(pod_job, tmp_path, env, message):  # noqa: F811
    done = ascend_from_env(pod_job, _file(tmp_path, b'{"status": "initializing"}'), env=env)
    assert_one_line(done, message)
    assert not pod_job.exists()


def test_a_volcano_index_that_is_not_ascii_digits_names_the_variable(pod_job):  # noqa: F811
    done = from_env({"VC_TASK_INDEX": "¹", "VC_WORKER_HOSTS": "a,b"}, "--k8s-kind", "volcano", "--platform", "CPU",
                    "--entry", PAYLOAD, "--job-dir", str(pod_job))
    assert_one_line(done, "VC_TASK_INDEX='¹': expected a whole number")
    assert not pod_job.exists()
