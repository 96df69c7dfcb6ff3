"""gen-rank-table against hostile values: an empty --server-ip, a bad --board-id, hostile server_ids."""
from __future__ import annotations

import json

import pytest

from tests.test_hccl_cli import SAMPLE, assert_bad_input, run
from tests.test_hccl_rank_table import EXPECTED_8P_10_0_0_1


def test_an_empty_server_ip_is_refused_not_taken_for_this_host(tmp_path):
    assert_bad_input(run(["--hccn-conf", SAMPLE, "--server-ip", ""], tmp_path), tmp_path, [],
                     "--server-ip: '' is not a valid IPv4 address")


@pytest.mark.parametrize("board_id", ["zz", "0x", "0x12345678901", "0x00\n2f", "0x００"])
def test_a_board_id_that_is_not_hex_is_refused(tmp_path, board_id):
    assert_bad_input(run(["--hccn-conf", SAMPLE, "--device-num", "[0,2)", "--server-ip", "10.0.0.1", "--format",
                          "0.x", "--board-id", board_id, "-o", "old.json"], tmp_path), tmp_path, [],
                     "board_id")


@pytest.mark.parametrize("server_id, shown", [
    ("10.0.0.1\x00", "'10.0.0.1\\x00'"),
    ("host\udc80", "'host\\udc80'"),
    ("../../etc/x;rm -rf /", "'../../etc/x;rm -rf /'"),
    ("a b", "'a b'"),
    ("$(reboot)", "'$(reboot)'"),
])
def test_check_refuses_a_server_id_that_is_not_a_host(tmp_path, server_id, shown):
    table = json.loads(EXPECTED_8P_10_0_0_1)
    table["server_list"][0]["server_id"] = server_id
    path = tmp_path / "t.json"
    # ensure_ascii: the lone surrogate is written as the JSON escape a hostile file would hold.
    path.write_text(json.dumps(table))
    assert_bad_input(run(["check", path], tmp_path), tmp_path, ["t.json"],
                     f"server_id {shown}: not a host address or name")
