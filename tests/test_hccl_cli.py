"""gen-rank-table through real subprocesses: generation, merge, check, and every bad input."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hccl import hccn_conf, rank_table
from hccl.addresses import primary_ipv4
from tests.test_hccl_rank_table import EXPECTED_0X_2P, EXPECTED_1_2_2P, EXPECTED_8P_10_0_0_1

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "hccn"
SAMPLE = DATA / "sample.conf"
SAMPLE_B = DATA / "sample_host_b.conf"
SCRIPT = Path(sys.executable).with_name("gen-rank-table")
# No hccn_tool on this PATH unless a test puts its fake one first.
BASE_PATH = "/usr/bin:/bin"


def run(args, cwd, tool_dir=None):
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "hccl.cli"]
    env = dict(os.environ, PATH=f"{tool_dir}:{BASE_PATH}" if tool_dir else BASE_PATH, PYTHONPATH=str(REPO))
    return subprocess.run(command + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def assert_bad_input(result, directory, before, fragment):
    """Exit 2, exactly one stderr line naming the problem, no traceback, nothing written."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stderr.endswith("\n")
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("gen-rank-table")
    assert fragment in lines[0], lines[0]
    assert result.stdout == ""
    assert sorted(os.listdir(directory)) == before


# ---------------------------------------------------------------- generate

def test_done_when_8p_table_is_byte_for_byte(tmp_path):
    result = run(["--hccn-conf", SAMPLE, "--visible-devices", "0,1,2,3,4,5,6,7", "--server-ip", "10.0.0.1"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == ["hccl_8p_01234567_10.0.0.1.json"]
    assert (tmp_path / "hccl_8p_01234567_10.0.0.1.json").read_bytes() == EXPECTED_8P_10_0_0_1.encode()
    assert result.stdout == "hccl_8p_01234567_10.0.0.1.json: format 1.0, 1 server, 8 devices, ranks 0-7\n"
    assert result.stderr == ""


def test_hccl_tools_spellings_and_generate_word_give_the_same_table(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run(["generate", "--hccn-conf", SAMPLE, "--server-ip", "10.0.0.1", "--output-dir", "a"],
               tmp_path).returncode == 0
    assert run(["--hccn-conf", SAMPLE, "--server_ip", "10.0.0.1", "--device_num", "[0,8)",
                "--visible_devices", "0,1,2,3,4,5,6,7", "--output-dir", "b"], tmp_path).returncode == 0
    name = "hccl_8p_01234567_10.0.0.1.json"
    assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text() == EXPECTED_8P_10_0_0_1


def test_visible_devices_map_logical_indexes_to_physical_ids(tmp_path):
    result = run(["--hccn-conf", SAMPLE, "--visible-devices", "4,5,6,7", "--device-num", "[0,4)",
                  "--server-ip", "10.0.0.1"], tmp_path)
    assert result.returncode == 0, result.stderr
    table = json.loads((tmp_path / "hccl_4p_0123_10.0.0.1.json").read_text())
    assert [(d["device_id"], d["device_ip"], d["rank_id"]) for d in table["server_list"][0]["device"]] == [
        (str(4 + i), f"192.98.92.{104 + i}", str(i)) for i in range(4)]


def test_server_ip_defaults_to_primary_ipv4(tmp_path):
    result = run(["--hccn-conf", SAMPLE, "--device-num", "[0,1)"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == [f"hccl_1p_0_{primary_ipv4()}.json"]


@pytest.mark.skipif(os.path.exists("/etc/hccn.conf"), reason="this host has a real /etc/hccn.conf")
def test_hccn_conf_defaults_to_etc(tmp_path):
    assert_bad_input(run(["--server-ip", "10.0.0.1"], tmp_path), tmp_path, [], "/etc/hccn.conf: no such file")


def test_format_0x_and_1_2_flags(tmp_path):
    assert run(["--hccn-conf", SAMPLE, "--device-num", "[0,2)", "--server-ip", "10.0.0.1", "--format", "0.x",
                "--board-id", "0x002f", "-o", "old.json"], tmp_path).returncode == 0
    assert (tmp_path / "old.json").read_text() == EXPECTED_0X_2P
    assert run(["--hccn-conf", SAMPLE, "--visible-devices", "4,5", "--device-num", "[0,2)",
                "--server-ip", "10.0.0.1", "--format", "1.2", "--host-ip", "172.16.0.100",
                "--super-device-ids", "12,13", "--device-port", "16667", "--super-pod-id", "pod-1",
                "-o", "pod.json"], tmp_path).returncode == 0
    assert (tmp_path / "pod.json").read_text() == EXPECTED_1_2_2P


def test_force_overwrites(tmp_path):
    target = tmp_path / "hccl_8p_01234567_10.0.0.1.json"
    target.write_text("stale")
    result = run(["--hccn-conf", SAMPLE, "--server-ip", "10.0.0.1", "--force"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == EXPECTED_8P_10_0_0_1
    assert os.listdir(tmp_path) == [target.name]


def test_help_is_the_manual(tmp_path):
    result = run(["--help"], tmp_path)
    assert result.returncode == 0
    for word in ("merge", "check", "--no-topology-check", "hccn_tool", "Exit status"):
        assert word in result.stdout


# ---------------------------------------------------------------- fake hccn_tool

FAKE_TOOL = """#!/bin/sh
# Stand-in for Ascend's hccn_tool: `hccn_tool -i N -ip -g` prints the device's address like the real one.
echo "$*" >> "$(dirname "$0")/calls.log"
[ "$1" = "-i" ] && [ "$3" = "-ip" ] && [ "$4" = "-g" ] || { echo "usage error" >&2; exit 1; }
{fail}
echo "ipaddr:192.98.50.$((100 + $2))"
echo "netmask:255.255.255.0"
"""


def fake_tool(directory: Path, fail: bool = False) -> Path:
    directory.mkdir()
    tool = directory / "hccn_tool"
    tool.write_text(FAKE_TOOL.replace("{fail}", 'echo "hccn_tool failed" >&2; exit 1' if fail else ""))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def test_done_when_hccn_tool_on_path_is_used(tmp_path):
    tools = fake_tool(tmp_path / "bin")
    out = tmp_path / "out"
    out.mkdir()
    result = run(["--hccn-conf", SAMPLE, "--server-ip", "10.0.0.1"], out, tool_dir=tools)
    assert result.returncode == 0, result.stderr
    table = json.loads((out / "hccl_8p_01234567_10.0.0.1.json").read_text())
    assert [d["device_ip"] for d in table["server_list"][0]["device"]] == [f"192.98.50.{100 + i}" for i in range(8)]
    assert (tools / "calls.log").read_text().splitlines() == [f"-i {i} -ip -g" for i in range(8)]


def test_failing_hccn_tool_falls_back_to_the_file(tmp_path):
    tools = fake_tool(tmp_path / "bin", fail=True)
    out = tmp_path / "out"
    out.mkdir()
    result = run(["--hccn-conf", SAMPLE, "--server-ip", "10.0.0.1"], out, tool_dir=tools)
    assert result.returncode == 0, result.stderr
    assert (out / "hccl_8p_01234567_10.0.0.1.json").read_text() == EXPECTED_8P_10_0_0_1


def test_failing_hccn_tool_and_missing_file(tmp_path):
    tools = fake_tool(tmp_path / "bin", fail=True)
    out = tmp_path / "out"
    out.mkdir()
    result = run(["--hccn-conf", "absent.conf", "--server-ip", "10.0.0.1"], out, tool_dir=tools)
    assert_bad_input(result, out, [], "absent.conf: no such file (and hccn_tool -i 0 -ip -g gave no ipaddr")


# ---------------------------------------------------------------- generate: bad input

GOOD_CONF = SAMPLE.read_text()
HALF_CONF = "".join(f"address_{i}=10.1.1.{i + 1}\n" for i in range(4))


@pytest.mark.parametrize("conf, args, fragment", [
    (None, ["--hccn-conf", "missing.conf"], "missing.conf: no such file"),
    ("DIR", [], "h.conf: is a directory"),
    (b"address_0=10.0.0.1\n\xff\xfe\n", [], "h.conf: not a text file"),
    ("address_0=10.1.1.1\naddress_1 10.1.1.2\n", [], "h.conf:2: malformed line 'address_1 10.1.1.2'"),
    ("address_0=10.1.1.1\naddress_one=10.1.1.2\n", [], "h.conf:2: malformed line"),
    ("netmask_0=255.0.0.0\naddress_0=10.1.1.256\n", [], "h.conf:2: '10.1.1.256' is not a valid IPv4 address"),
    (HALF_CONF + "address_2=10.1.1.9\n", [], "h.conf:5: device 2 given twice (first on line 3)"),
    ("address_0=10.1.1.1\naddress_1=10.1.1.1\n", [], "h.conf:2: address 10.1.1.1 of device 1 is already device 0's"),
    (HALF_CONF, [], "h.conf: no address_4= line for device 4 (it has devices 0,1,2,3)"),
    (GOOD_CONF, ["--visible-devices", "0,1,x"], "--visible-devices '0,1,x': 'x' is not a device id"),
    (GOOD_CONF, ["--visible-devices", "0,1,1,2"], "--visible-devices '0,1,1,2': device 1 is listed twice"),
    (GOOD_CONF, ["--visible-devices", ""], "--visible-devices: empty"),
    (GOOD_CONF, ["--device-num", "0-8"], "--device-num '0-8': expected a half-open range like [0,8)"),
    (GOOD_CONF, ["--device-num", "[4,2)"], "--device-num '[4,2)': the range is empty"),
    (GOOD_CONF, ["--device-num", "[0,9)"], "--device-num '[0,9)': reaches index 8 but --visible-devices lists only 8"),
    (GOOD_CONF, ["--device-num", "[0,3)"], "3 devices (0,1,2); HCCL needs 1, 2, 4 or 8"),
    (GOOD_CONF, ["--device-num", "[3,5)"], "devices 3,4 span both groups"),
    (GOOD_CONF, ["--visible-devices", "9", "--device-num", "[0,1)"], "device 9 is not one of 0-7"),
    (GOOD_CONF, ["--server-ip", "10.0.0.256"], "--server-ip: '10.0.0.256' is not a valid IPv4 address"),
    (GOOD_CONF, ["--host-ip", "nohost", "--format", "1.2"], "--host-ip: 'nohost' is not a valid IPv4 address"),
    (GOOD_CONF, ["--format", "2.0"], "argument --format: invalid choice: '2.0'"),
    (GOOD_CONF, ["--device-port", "http"], "argument --device-port: invalid int value: 'http'"),
    (GOOD_CONF, ["--device-port", "0", "--format", "1.2"], "--device-port 0: not a TCP port"),
    (GOOD_CONF, ["--format", "1.2", "--super-device-ids", "1,2"], "--super-device-ids: 2 ids for 8 devices"),
    (GOOD_CONF, ["--host-ip", "10.0.0.9"], "--host-ip only applies to --format 1.2 (this table is 1.0)"),
    (GOOD_CONF, ["--board-id", "0x002f", "--format", "1.2"], "--board-id only applies to --format 0.x"),
    (GOOD_CONF, ["--output-dir", "nowhere"], "--output-dir nowhere: no such directory"),
    (GOOD_CONF, ["-o", "nowhere/t.json"], "nowhere/t.json: directory nowhere does not exist"),
    (GOOD_CONF, ["-o", "x.json", "--output-dir", "."], "not allowed with argument"),
    (GOOD_CONF, ["--bogus"], "unrecognized arguments: --bogus"),
])
def test_generate_bad_input(tmp_path, conf, args, fragment):
    if conf == "DIR":
        (tmp_path / "h.conf").mkdir()
    elif isinstance(conf, bytes):
        (tmp_path / "h.conf").write_bytes(conf)
    elif conf is not None:
        (tmp_path / "h.conf").write_text(conf)
    before = sorted(os.listdir(tmp_path))
    result = run(["--hccn-conf", "h.conf", "--server-ip", "10.0.0.1"] + args, tmp_path)
    assert_bad_input(result, tmp_path, before, fragment)


def test_generate_existing_output_needs_force(tmp_path):
    target = tmp_path / "hccl_8p_01234567_10.0.0.1.json"
    target.write_text("keep me")
    result = run(["--hccn-conf", SAMPLE, "--server-ip", "10.0.0.1"], tmp_path)
    assert_bad_input(result, tmp_path, [target.name],
                     "hccl_8p_01234567_10.0.0.1.json: already exists (use --force to overwrite)")
    assert target.read_text() == "keep me"


def test_no_topology_check_relaxes_placement(tmp_path):
    result = run(["--hccn-conf", SAMPLE, "--server-ip", "10.0.0.1", "--device-num", "[2,5)",
                  "--no-topology-check"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == ["hccl_3p_234_10.0.0.1.json"]
    checked = run(["check", "hccl_3p_234_10.0.0.1.json"], tmp_path)
    assert_bad_input(checked, tmp_path, ["hccl_3p_234_10.0.0.1.json"],
                     "hccl_3p_234_10.0.0.1.json: server 10.0.0.1: 3 devices")
    relaxed = run(["check", "hccl_3p_234_10.0.0.1.json", "--no-topology-check"], tmp_path)
    assert relaxed.returncode == 0
    assert relaxed.stdout == "hccl_3p_234_10.0.0.1.json: ok, format 1.0, 1 server, 3 devices, ranks 0-2\n"


# ---------------------------------------------------------------- merge and check

@pytest.fixture
def two_hosts(tmp_path):
    """Single-host tables of 10.0.0.2 (host B) and 10.0.0.1 (host A), generated by the CLI."""
    for conf, ip in ((SAMPLE_B, "10.0.0.2"), (SAMPLE, "10.0.0.1")):
        result = run(["--hccn-conf", conf, "--server-ip", ip], tmp_path)
        assert result.returncode == 0, result.stderr
    return tmp_path / "hccl_8p_01234567_10.0.0.2.json", tmp_path / "hccl_8p_01234567_10.0.0.1.json"


def expected_merged(order):
    """The 16-rank table in the reference 1.0 layout, servers in `order`, written the way hccl_tools does."""
    third = {"10.0.0.1": 92, "10.0.0.2": 93}
    server_list = []
    for position, server_id in enumerate(order):
        server_list.append({"server_id": server_id,
                            "device": [{"device_id": str(d), "device_ip": f"192.98.{third[server_id]}.{100 + d}",
                                        "rank_id": str(8 * position + d)} for d in range(8)],
                            "host_nic_ip": "reserve"})
    table = {"version": "1.0", "server_count": "2", "server_list": server_list, "status": "completed"}
    return json.dumps(table, indent=4)


def test_done_when_merge_puts_lower_server_id_first(two_hosts, tmp_path):
    high, low = two_hosts
    result = run(["merge", high.name, low.name], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hccl_2s_16p.json: format 1.0, 2 servers, 16 devices, ranks 0-15\n"
    merged = (tmp_path / "hccl_2s_16p.json").read_text()
    assert merged == expected_merged(["10.0.0.1", "10.0.0.2"])
    owners = {int(d["rank_id"]): s["server_id"] for s in json.loads(merged)["server_list"] for d in s["device"]}
    assert all(owners[r] == "10.0.0.1" for r in range(8)) and all(owners[r] == "10.0.0.2" for r in range(8, 16))


def test_merge_keep_order_and_output_file(two_hosts, tmp_path):
    high, low = two_hosts
    result = run(["merge", high, low, "--keep-order", "-o", "cluster.json"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cluster.json").read_text() == expected_merged(["10.0.0.2", "10.0.0.1"])


def test_merge_to_other_layout_and_check_it(two_hosts, tmp_path):
    result = run(["merge", *two_hosts, "--format", "0.x", "-o", "old.json"], tmp_path)
    assert result.returncode == 0, result.stderr
    checked = run(["check", "old.json"], tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == "old.json: ok, format 0.x, 2 servers, 16 devices, ranks 0-15\n"


def test_check_summary_for_each_layout(tmp_path):
    (tmp_path / "a.json").write_text(EXPECTED_8P_10_0_0_1)
    (tmp_path / "b.json").write_text(EXPECTED_1_2_2P)
    (tmp_path / "c.json").write_text(EXPECTED_0X_2P)
    assert run(["check", "a.json"], tmp_path).stdout == "a.json: ok, format 1.0, 1 server, 8 devices, ranks 0-7\n"
    assert run(["check", "b.json"], tmp_path).stdout == "b.json: ok, format 1.2, 1 server, 2 devices, ranks 0-1\n"
    assert run(["check", "c.json"], tmp_path).stdout == "c.json: ok, format 0.x, 1 server, 2 devices, ranks 0-1\n"


def test_merge_same_addresses_on_two_hosts_is_refused(tmp_path):
    for ip in ("10.0.0.1", "10.0.0.2"):
        assert run(["--hccn-conf", SAMPLE, "--server-ip", ip], tmp_path).returncode == 0
    before = sorted(os.listdir(tmp_path))
    result = run(["merge", *before], tmp_path)
    assert_bad_input(result, tmp_path, before, "device 0 has address 192.98.92.100, already used by device 0 of"
                                               " server 10.0.0.1")


def test_merge_half_servers_needs_no_topology_check(tmp_path):
    for conf, ip in ((SAMPLE, "10.0.0.1"), (SAMPLE_B, "10.0.0.2")):
        assert run(["--hccn-conf", conf, "--server-ip", ip, "--device-num", "[0,4)"], tmp_path).returncode == 0
    before = sorted(os.listdir(tmp_path))
    assert_bad_input(run(["merge", *before], tmp_path), tmp_path, before,
                     "server 10.0.0.1: has 4 devices; in a multi-server table every server needs all 8")
    result = run(["merge", *before, "--no-topology-check"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hccl_2s_8p.json" in os.listdir(tmp_path)


def _write_json(path, edit):
    obj = json.loads(EXPECTED_8P_10_0_0_1)
    edit(obj)
    path.write_text(json.dumps(obj, indent=4))


@pytest.mark.parametrize("command, setup, fragment", [
    (["merge", "a.json", "gone.json"], None, "gone.json: no such file"),
    (["merge", "a.json", "bad.json"], lambda d: (d / "bad.json").write_text("{]"),
     "bad.json: line 1 column 2: not valid JSON"),
    (["merge", "a.json", "a.json"], None, "server 10.0.0.1 appears in more than one table"),
    (["merge", "a.json", "dir.json"], lambda d: (d / "dir.json").mkdir(), "dir.json: is a directory"),
    (["merge", "a.json", "b.json"], lambda d: (d / "hccl_2s_16p.json").write_text("x"),
     "hccl_2s_16p.json: already exists (use --force to overwrite)"),
    (["merge"], None, "the following arguments are required: FILE"),
    (["check", "gap.json"], lambda d: _write_json(d / "gap.json", lambda o: o["server_list"][0]["device"][7].update(
        rank_id="9")), "gap.json: rank ids must be 0-7, but rank 7 is missing"),
    (["check", "init.json"], lambda d: _write_json(d / "init.json", lambda o: o.update(status="initializing")),
     "init.json: status is 'initializing'"),
    (["check", "dup.json"], lambda d: _write_json(d / "dup.json", lambda o: o["server_list"][0]["device"][1].update(
        device_id="0")), "dup.json: server 10.0.0.1: device 0 is listed twice"),
    (["check", "noip.json"], lambda d: _write_json(d / "noip.json", lambda o: o["server_list"][0]["device"][5].pop(
        "device_ip")), "noip.json: server_list[0].device[5]: missing 'device_ip'"),
    (["check", "gone.json"], None, "gone.json: no such file"),
    (["check", "a.json", "b.json"], None, "unrecognized arguments: b.json"),
])
def test_merge_and_check_bad_input(tmp_path, command, setup, fragment):
    (tmp_path / "a.json").write_text(EXPECTED_8P_10_0_0_1)
    rank_table.write(rank_table.build("10.0.0.2", hccn_conf.read(SAMPLE_B)), tmp_path / "b.json")
    if setup is not None:
        setup(tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert_bad_input(run(command, tmp_path), tmp_path, before, fragment)
