"""hccl.rank_table: build, the three JSON layouts byte for byte, load, merge, validate, write."""
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hccl import hccn_conf, rank_table
from hccl.errors import HcclError
from hccl.rank_table import Device, RankTable, Server

DATA = Path(__file__).parent / "data" / "hccn"
IPS_A = hccn_conf.read(DATA / "sample.conf")
IPS_B = hccn_conf.read(DATA / "sample_host_b.conf")

# What MindSpore model_zoo hccl_tools.py writes for sample.conf, all 8 devices, --server_ip 10.0.0.1
# (json.dump(table, f, indent=4): key order as it builds the dicts, no trailing newline).
EXPECTED_8P_10_0_0_1 = """{
    "version": "1.0",
    "server_count": "1",
    "server_list": [
        {
            "server_id": "10.0.0.1",
            "device": [
                {
                    "device_id": "0",
                    "device_ip": "192.98.92.100",
                    "rank_id": "0"
                },
                {
                    "device_id": "1",
                    "device_ip": "192.98.92.101",
                    "rank_id": "1"
                },
                {
                    "device_id": "2",
                    "device_ip": "192.98.92.102",
                    "rank_id": "2"
                },
                {
                    "device_id": "3",
                    "device_ip": "192.98.92.103",
                    "rank_id": "3"
                },
                {
                    "device_id": "4",
                    "device_ip": "192.98.92.104",
                    "rank_id": "4"
                },
                {
                    "device_id": "5",
                    "device_ip": "192.98.92.105",
                    "rank_id": "5"
                },
                {
                    "device_id": "6",
                    "device_ip": "192.98.92.106",
                    "rank_id": "6"
                },
                {
                    "device_id": "7",
                    "device_ip": "192.98.92.107",
                    "rank_id": "7"
                }
            ],
            "host_nic_ip": "reserve"
        }
    ],
    "status": "completed"
}"""

# Pre-1.0 MindSpore hccl_tools.py layout, devices 0 and 1.
EXPECTED_0X_2P = """{
    "board_id": "0x002f",
    "chip_info": "910",
    "deploy_mode": "lab",
    "group_count": "1",
    "group_list": [
        {
            "device_num": "2",
            "server_num": "1",
            "group_name": "",
            "instance_count": "2",
            "instance_list": [
                {
                    "devices": [
                        {
                            "device_id": "0",
                            "device_ip": "192.98.92.100"
                        }
                    ],
                    "rank_id": "0",
                    "server_id": "10.0.0.1"
                },
                {
                    "devices": [
                        {
                            "device_id": "1",
                            "device_ip": "192.98.92.101"
                        }
                    ],
                    "rank_id": "1",
                    "server_id": "10.0.0.1"
                }
            ]
        }
    ],
    "para_plane_nic_location": "device",
    "para_plane_nic_name": [
        "eth0",
        "eth1"
    ],
    "para_plane_nic_num": "2",
    "status": "completed"
}"""

# CANN 1.2 layout, devices 4 and 5 with explicit super-pod fields.
EXPECTED_1_2_2P = """{
    "version": "1.2",
    "server_count": "1",
    "server_list": [
        {
            "server_id": "10.0.0.1",
            "host_ip": "172.16.0.100",
            "device": [
                {
                    "device_id": "4",
                    "super_device_id": "12",
                    "device_ip": "192.98.92.104",
                    "device_port": "16667",
                    "rank_id": "0"
                },
                {
                    "device_id": "5",
                    "super_device_id": "13",
                    "device_ip": "192.98.92.105",
                    "device_port": "16667",
                    "rank_id": "1"
                }
            ],
            "host_nic_ip": "reserve"
        }
    ],
    "status": "completed",
    "super_pod_list": [
        {
            "super_pod_id": "pod-1",
            "server_list": [
                {
                    "server_id": "10.0.0.1"
                }
            ]
        }
    ]
}"""


def host(server_id, ips=IPS_A, devices=range(8), fmt="1.0", **extra):
    return rank_table.build(server_id, ips, devices, fmt=fmt, **extra)


# ---------------------------------------------------------------- build and the three layouts

def test_build_8p_is_hccl_tools_output_byte_for_byte():
    table = host("10.0.0.1")
    rank_table.validate(table)
    assert rank_table.dumps(table) == EXPECTED_8P_10_0_0_1
    assert table.rank_size == 8 and table.server_count == 1
    assert [d.rank_id for d in table.servers[0].devices] == list(range(8))


def test_build_0x_layout():
    table = host("10.0.0.1", devices=[0, 1], fmt="0.x", board_id="0x002f")
    assert rank_table.dumps(table) == EXPECTED_0X_2P


def test_build_1_2_layout_with_flags():
    table = host("10.0.0.1", devices=[4, 5], fmt="1.2", host_ip="172.16.0.100", super_device_ids=[12, 13],
                 device_port=16667, super_pod_id="pod-1")
    assert rank_table.dumps(table) == EXPECTED_1_2_2P


def test_build_1_2_documented_defaults():
    obj = json.loads(rank_table.dumps(host("10.0.0.1", devices=[6, 7], fmt="1.2")))
    server = obj["server_list"][0]
    assert server["host_ip"] == "10.0.0.1"
    assert [(d["device_id"], d["super_device_id"], d["device_port"]) for d in server["device"]] == [
        ("6", "6", "16666"), ("7", "7", "16666")]
    assert obj["super_pod_list"] == [{"super_pod_id": "0", "server_list": [{"server_id": "10.0.0.1"}]}]


def test_build_0x_default_board_id_follows_architecture(monkeypatch):
    import platform
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert json.loads(rank_table.dumps(host("h", devices=[0], fmt="0.x")))["board_id"] == "0x002f"
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert json.loads(rank_table.dumps(host("h", devices=[0], fmt="0.x")))["board_id"] == "0x0000"


def test_build_ranks_follow_the_given_device_order():
    table = host("10.0.0.1", devices=[3, 1, 2, 0])
    assert [(d.device_id, d.rank_id) for d in table.servers[0].devices] == [(3, 0), (1, 1), (2, 2), (0, 3)]


def test_build_without_address_names_the_device():
    with pytest.raises(HcclError, match="device 5 has no address"):
        rank_table.build("10.0.0.1", {0: "10.1.1.1"}, [0, 5])


def test_build_super_device_ids_must_match_devices():
    with pytest.raises(HcclError, match="--super-device-ids: 1 ids for 2 devices"):
        host("10.0.0.1", devices=[0, 1], fmt="1.2", super_device_ids=[0])


def test_model_rejects_bad_values():
    with pytest.raises(HcclError, match="not a valid IPv4"):
        Device(0, "999.1.1.1", 0)
    with pytest.raises(HcclError, match="non-negative integer"):
        Device(-1, "10.0.0.1", 0)
    with pytest.raises(HcclError, match="has no devices"):
        Server("s", ())
    with pytest.raises(HcclError, match="unknown rank table format"):
        RankTable((Server("s", (Device(0, "10.0.0.1", 0),)),), fmt="2.0")
    with pytest.raises(HcclError, match="not a TCP port"):
        Device(0, "10.0.0.1", 0, device_port=70000)


# ---------------------------------------------------------------- load

@pytest.mark.parametrize("fmt", ["1.0", "1.2", "0.x"])
def test_dumps_load_round_trip(tmp_path, fmt):
    table = host("10.0.0.1", fmt=fmt, board_id="0x0000")
    path = tmp_path / "t.json"
    rank_table.write(table, path)
    loaded = rank_table.load(path)
    assert loaded.fmt == fmt
    assert rank_table.dumps(loaded) == rank_table.dumps(table)
    assert [(d.device_id, d.device_ip, d.rank_id) for d in loaded.servers[0].devices] == [
        (i, IPS_A[i], i) for i in range(8)]


def test_load_converts_between_layouts():
    old = rank_table.loads(EXPECTED_0X_2P)
    assert old.fmt == "0.x"
    new = rank_table.dumps(replace(old, fmt="1.0"))
    assert json.loads(new)["server_list"][0]["device"] == [
        {"device_id": "0", "device_ip": "192.98.92.100", "rank_id": "0"},
        {"device_id": "1", "device_ip": "192.98.92.101", "rank_id": "1"}]
    super_pod = rank_table.loads(EXPECTED_1_2_2P)
    assert super_pod.servers[0].host_ip == "172.16.0.100"
    assert super_pod.servers[0].super_pod_id == "pod-1"
    assert [d.super_device_id for d in super_pod.servers[0].devices] == [12, 13]


def test_load_accepts_merge_hccl_integer_rank_ids():
    # merge_hccl.py assigned rank_id as a JSON number.
    obj = json.loads(EXPECTED_8P_10_0_0_1)
    for i, device in enumerate(obj["server_list"][0]["device"]):
        device["rank_id"] = i
    table = rank_table.loads(json.dumps(obj))
    assert [d.rank_id for d in table.servers[0].devices] == list(range(8))


def test_load_0x_groups_instances_by_server():
    merged = rank_table.merge([host("10.0.0.1", fmt="0.x"), host("10.0.0.2", IPS_B, fmt="0.x")])
    again = rank_table.loads(rank_table.dumps(merged))
    assert [s.server_id for s in again.servers] == ["10.0.0.1", "10.0.0.2"]
    assert json.loads(rank_table.dumps(merged))["group_list"][0]["server_num"] == "2"
    assert json.loads(rank_table.dumps(merged))["para_plane_nic_num"] == "8"


def _edited(text, edit):
    obj = json.loads(text)
    edit(obj)
    return json.dumps(obj)


@pytest.mark.parametrize("text, fragment", [
    ("{", "line 1 column 2: not valid JSON"),
    ("[]", "top level is a JSON array"),
    ('{"status": "completed"}', "not a rank table"),
    ('{"version": "1.1"}', "version '1.1' is not supported"),
    (_edited(EXPECTED_8P_10_0_0_1, lambda o: o["server_list"][0]["device"][3].pop("device_ip")),
     "server_list[0].device[3]: missing 'device_ip'"),
    (_edited(EXPECTED_8P_10_0_0_1, lambda o: o["server_list"][0]["device"][2].update(device_id="two")),
     "server_list[0].device[2].device_id: 'two' is not a non-negative integer"),
    (_edited(EXPECTED_8P_10_0_0_1, lambda o: o["server_list"][0]["device"][1].update(device_ip="1.2.3")),
     "server_list[0].device[1]: device 1: '1.2.3' is not a valid IPv4 address"),
    (_edited(EXPECTED_8P_10_0_0_1, lambda o: o.update(server_count="2")),
     "server_count: says 2 but there are 1 servers"),
    (_edited(EXPECTED_8P_10_0_0_1, lambda o: o.update(server_list={})), "server_list: expected an array"),
    (_edited(EXPECTED_8P_10_0_0_1, lambda o: o["server_list"][0].update(server_id=7)),
     "server_list[0].server_id: expected a string"),
    (_edited(EXPECTED_8P_10_0_0_1, lambda o: o.update(server_list=[])), "lists no servers"),
    (_edited(EXPECTED_0X_2P, lambda o: o["group_list"].append(o["group_list"][0])), "only single-group"),
    (_edited(EXPECTED_0X_2P, lambda o: o["group_list"][0].update(instance_count="3")),
     "group_list[0].instance_count: says 3"),
    (_edited(EXPECTED_1_2_2P, lambda o: o["super_pod_list"][0]["server_list"].append({"server_id": "x"})),
     "super_pod_list: server x is not in server_list"),
])
def test_loads_rejects_bad_tables_naming_the_key(text, fragment):
    with pytest.raises(HcclError) as caught:
        rank_table.loads(text)
    assert fragment in str(caught.value)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{nope")
    with pytest.raises(HcclError, match=r"broken\.json: line 1 column 2: not valid JSON"):
        rank_table.load(path)
    with pytest.raises(HcclError, match=r"absent\.json: no such file"):
        rank_table.load(tmp_path / "absent.json")


# ---------------------------------------------------------------- merge

def test_merge_orders_servers_by_numeric_server_id_and_renumbers():
    high, low = host("10.0.0.2", IPS_B), host("10.0.0.1", IPS_A)
    merged = rank_table.merge([high, low])
    rank_table.validate(merged)
    assert [s.server_id for s in merged.servers] == ["10.0.0.1", "10.0.0.2"]
    owners = {d.rank_id: s.server_id for s in merged.servers for d in s.devices}
    assert [owners[r] for r in range(16)] == ["10.0.0.1"] * 8 + ["10.0.0.2"] * 8
    assert json.loads(rank_table.dumps(merged))["server_count"] == "2"
    assert rank_table.merged_filename(merged) == "hccl_2s_16p.json"


def test_merge_compares_addresses_numerically_not_as_text():
    ips = {9: {d: f"10.9.{d}.1" for d in range(8)}, 10: {d: f"10.10.{d}.1" for d in range(8)},
           100: {d: f"10.100.{d}.1" for d in range(8)}}
    tables = [host(f"10.0.0.{n}", ips[n]) for n in (100, 10, 9)]
    merged = rank_table.merge(tables)
    assert [s.server_id for s in merged.servers] == ["10.0.0.9", "10.0.0.10", "10.0.0.100"]
    kept = rank_table.merge(tables, keep_order=True)
    assert [s.server_id for s in kept.servers] == ["10.0.0.100", "10.0.0.10", "10.0.0.9"]
    assert kept.rank(0)[0].server_id == "10.0.0.100"


def test_merge_rejects_a_server_twice():
    with pytest.raises(HcclError, match="server 10.0.0.1 appears in more than one table"):
        rank_table.merge([host("10.0.0.1"), host("10.0.0.1", IPS_B)])


def test_merge_keeps_first_layout_unless_told():
    a, b = host("10.0.0.1", fmt="1.2"), host("10.0.0.2", IPS_B, fmt="1.0")
    assert rank_table.merge([a, b]).fmt == "1.2"
    assert rank_table.merge([a, b], fmt="0.x").fmt == "0.x"


# ---------------------------------------------------------------- validate

def _table(*servers, fmt="1.0"):
    return RankTable(tuple(servers), fmt=fmt)


def _server(server_id, pairs, **extra):
    return Server(server_id, tuple(Device(d, ip, r) for d, ip, r in pairs), **extra)


@pytest.mark.parametrize("devices", [[0], [5], [0, 1], [6, 7], [0, 1, 2, 3], [4, 5, 6, 7], list(range(8))])
def test_topology_allows_hccl_device_sets(devices):
    rank_table.validate(host("10.0.0.1", devices=devices))


@pytest.mark.parametrize("devices, fragment", [
    ([0, 1, 2], "3 devices (0,1,2); HCCL needs 1, 2, 4 or 8"),
    ([3, 4], "devices 3,4 span both groups"),
    ([2, 3, 4, 5], "devices 2,3,4,5 span both groups"),
    ([0, 1, 2, 3, 4, 5], "6 devices"),
])
def test_topology_rejects_other_device_sets(devices, fragment):
    table = host("10.0.0.1", devices=devices)
    with pytest.raises(HcclError) as caught:
        rank_table.validate(table)
    assert fragment in str(caught.value) and "--no-topology-check" in str(caught.value)
    rank_table.validate(table, topology_check=False)


def test_topology_rejects_device_ids_beyond_7():
    table = rank_table.build("h", {9: "10.0.0.9"}, [9])
    with pytest.raises(HcclError, match="device 9 is not one of 0-7"):
        rank_table.validate(table)
    rank_table.validate(table, topology_check=False)


def test_topology_needs_8_devices_on_every_server_of_many():
    merged = rank_table.merge([host("10.0.0.1", devices=range(4)), host("10.0.0.2", IPS_B, devices=range(4))])
    with pytest.raises(HcclError, match="server 10.0.0.1: has 4 devices; in a multi-server table every server"):
        rank_table.validate(merged)
    rank_table.validate(merged, topology_check=False)


@pytest.mark.parametrize("table, fragment", [
    (_table(_server("a", [(0, "10.0.0.1", 0)]), _server("a", [(0, "10.0.0.2", 1)])), "server a is listed twice"),
    (_table(_server("a", [(0, "10.0.0.1", 0), (0, "10.0.0.2", 1)])), "server a: device 0 is listed twice"),
    (_table(_server("a", [(0, "10.0.0.1", 0), (1, "10.0.0.1", 1)])),
     "server a: device 1 has address 10.0.0.1, already used by device 0 of server a"),
    (_table(_server("a", [(0, "10.0.0.1", 0), (1, "10.0.0.2", 0)])), "device 1 has rank 0, already given to"),
    (_table(_server("a", [(0, "10.0.0.1", 0), (1, "10.0.0.2", 2)])), "rank ids must be 0-1, but rank 1 is missing"),
    (_table(_server("a", [(0, "10.0.0.1", 1)])), "rank 0 is missing"),
    (_table(_server("a", [(0, "10.0.0.1", 0)]), _server("b", [(0, "10.0.0.2", 1)]), fmt="1.2"),
     "super_device_id 0 in super pod 0, already device 0 of server a's"),
    (replace(_table(_server("a", [(0, "10.0.0.1", 0)])), status="initializing"), "status is 'initializing'"),
])
def test_validate_rejects(table, fragment):
    for check in (True, False):
        with pytest.raises(HcclError) as caught:
            rank_table.validate(table, topology_check=check)
        assert fragment in str(caught.value)


def test_validate_1_2_distinct_super_pods_may_reuse_super_device_ids():
    a = host("10.0.0.1", fmt="1.2", super_pod_id="0")
    b = host("10.0.0.2", IPS_B, fmt="1.2", super_pod_id="1")
    merged = rank_table.merge([a, b])
    rank_table.validate(merged)
    assert [p["super_pod_id"] for p in json.loads(rank_table.dumps(merged))["super_pod_list"]] == ["0", "1"]


# ---------------------------------------------------------------- write

def test_write_refuses_existing_file_and_force_replaces(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("old")
    with pytest.raises(HcclError, match="already exists"):
        rank_table.write(host("10.0.0.1"), path)
    assert path.read_text() == "old"
    rank_table.write(host("10.0.0.1"), path, force=True)
    assert path.read_text() == EXPECTED_8P_10_0_0_1
    assert sorted(os.listdir(tmp_path)) == ["t.json"]


def test_write_mode_follows_umask_like_open(tmp_path):
    old = os.umask(0o022)
    try:
        rank_table.write(host("10.0.0.1"), tmp_path / "t.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t.json").stat().st_mode) == 0o644


def test_write_into_missing_directory_leaves_nothing(tmp_path):
    with pytest.raises(HcclError, match="does not exist"):
        rank_table.write(host("10.0.0.1"), tmp_path / "no" / "t.json")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- properties

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 20) | st.text(max_size=8)
    | st.sampled_from(["1.0", "1.2", "0", "7", "10.0.0.1", "completed", "reserve"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["version", "server_count", "server_list", "status", "server_id", "device", "device_id",
                         "device_ip", "rank_id", "group_list", "instance_list", "devices", "super_pod_list",
                         "super_pod_id", "host_ip", "x"]), children, max_size=6),
    max_leaves=30)


@FAST
@given(json_values)
def test_random_json_loads_or_fails_cleanly(obj):
    try:
        table = rank_table.loads(json.dumps(obj))
    except HcclError as err:
        assert "\n" not in str(err)
    else:
        assert table.rank_size >= 1


@st.composite
def single_host_tables(draw, fmt=st.sampled_from(["1.0", "1.2", "0.x"])):
    third = draw(st.integers(1, 223))
    fourth = draw(st.integers(0, 255))
    devices = draw(st.sampled_from([[0], [3], [0, 1], [4, 5], [0, 1, 2, 3], [4, 5, 6, 7], list(range(8))]))
    ips = {d: f"{third}.{fourth}.{d}.1" for d in devices}
    server_id = f"{third}.{fourth}.0.1"
    # Default super_device_ids repeat on every host: one super pod per host keeps them unique.
    return rank_table.build(server_id, ips, devices, fmt=draw(fmt), board_id="0x0000", super_pod_id=server_id)


@FAST
@given(single_host_tables())
def test_tables_survive_dumps_and_loads(table):
    rank_table.validate(table)
    again = rank_table.loads(rank_table.dumps(table))
    assert rank_table.dumps(again) == rank_table.dumps(table)
    assert not rank_table.dumps(table).endswith("\n")


@FAST
@given(st.lists(single_host_tables(), min_size=1, max_size=6, unique_by=lambda t: t.servers[0].server_id))
def test_merge_sorts_numerically_and_ranks_are_contiguous(tables):
    merged = rank_table.merge(tables)
    rank_table.validate(merged, topology_check=False)
    keys = [tuple(int(p) for p in s.server_id.split(".")) for s in merged.servers]
    assert keys == sorted(keys)
    ranks = [d.rank_id for s in merged.servers for d in s.devices]
    assert ranks == list(range(sum(t.rank_size for t in tables)))
