"""hccl.hccn_conf: parsing hccn.conf text and files, and asking a (fake) hccn_tool."""
import os
import stat
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hccl import hccn_conf
from hccl.errors import HcclError

DATA = Path(__file__).parent / "data" / "hccn"
SAMPLE = DATA / "sample.conf"
SAMPLE_IPS = {i: f"192.98.92.{100 + i}" for i in range(8)}


def test_sample_file_gives_every_address_and_ignores_other_keys():
    assert hccn_conf.read(SAMPLE) == SAMPLE_IPS


def test_parse_tolerates_blank_lines_comments_crlf_bom_and_spaces():
    text = "\ufeff# comment\r\n\r\naddress_1 = 10.1.1.1 \r\n  address_0=10.1.1.0\r\nnetmask_0=255.255.255.0\r\n"
    assert hccn_conf.parse(text) == {1: "10.1.1.1", 0: "10.1.1.0"}


def test_parse_empty_text_is_no_devices():
    assert hccn_conf.parse("") == {}


@pytest.mark.parametrize("text, fragment", [
    ("address_0=10.0.0.1\naddress_1 10.0.0.2\n", "x.conf:2: malformed line"),
    ("address_x=10.0.0.1\n", "x.conf:1: malformed line 'address_x=10.0.0.1'"),
    ("address_=10.0.0.1\n", "x.conf:1: malformed line"),
    ("address_0=10.0.0.256\n", "x.conf:1: '10.0.0.256' is not a valid IPv4 address (device 0)"),
    ("address_0=\n", "x.conf:1: '' is not a valid IPv4 address"),
    ("address_0=010.0.0.1\n", "not a valid IPv4 address"),
    ("address_0=224.0.0.1\n", "not a valid IPv4 address"),
    ("address_0=0.0.0.0\n", "not a valid IPv4 address"),
    ("address_0=fe80::1\n", "not a valid IPv4 address"),
    ("\n\naddress_3=10.0.0.3\naddress_3=10.0.0.4\n", "x.conf:4: device 3 given twice (first on line 3)"),
    ("address_0=10.0.0.9\naddress_1=10.0.0.9\n", "x.conf:2: address 10.0.0.9 of device 1 is already device 0's"),
])
def test_parse_rejects_bad_lines_naming_file_and_line(text, fragment):
    with pytest.raises(HcclError) as caught:
        hccn_conf.parse(text, source="x.conf")
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_hcclerror_is_a_valueerror():
    assert issubclass(HcclError, ValueError)


def test_read_missing_file(tmp_path):
    with pytest.raises(HcclError, match=r"nope\.conf: no such file"):
        hccn_conf.read(tmp_path / "nope.conf")


def test_read_directory(tmp_path):
    with pytest.raises(HcclError, match="is a directory"):
        hccn_conf.read(tmp_path)


def test_read_binary_file(tmp_path):
    path = tmp_path / "bin.conf"
    path.write_bytes(b"address_0=10.0.0.1\n\xff\xfe\x00garbage")
    with pytest.raises(HcclError, match=r"bin\.conf: not a text file"):
        hccn_conf.read(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_read_unreadable_file(tmp_path):
    path = tmp_path / "secret.conf"
    path.write_text("address_0=10.0.0.1\n")
    path.chmod(0)
    with pytest.raises(HcclError, match="cannot read"):
        hccn_conf.read(path)


# ---------------------------------------------------------------- query: hccn_tool or file

FAKE_TOOL = """#!/bin/sh
# Fake Ascend hccn_tool: answers `hccn_tool -i N -ip -g` like the real one.
echo "$*" >> "{log}"
if [ "$1" != "-i" ] || [ "$3" != "-ip" ] || [ "$4" != "-g" ]; then echo "bad usage" >&2; exit 1; fi
case "$2" in {fail}) echo "Get ip fail" >&2; exit 255;; esac
echo "ipaddr:192.98.{third}.$((100 + $2))"
echo "netmask:255.255.255.0"
"""


def install_fake_tool(directory: Path, third: int = 50, fail: str = "none") -> Path:
    log = directory / "hccn_tool.log"
    tool = directory / "hccn_tool"
    tool.write_text(FAKE_TOOL.format(log=log, third=third, fail=fail))
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return log


def test_query_reads_file_when_no_tool(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert hccn_conf.query([4, 5, 6, 7], SAMPLE) == {d: SAMPLE_IPS[d] for d in (4, 5, 6, 7)}


def test_query_prefers_hccn_tool(monkeypatch, tmp_path):
    log = install_fake_tool(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + "/usr/bin:/bin")
    assert hccn_conf.query([0, 1, 2, 3], SAMPLE) == {d: f"192.98.50.{100 + d}" for d in range(4)}
    assert log.read_text().splitlines() == [f"-i {d} -ip -g" for d in range(4)]


def test_query_falls_back_to_file_when_tool_fails(monkeypatch, tmp_path):
    install_fake_tool(tmp_path, fail="2")
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + "/usr/bin:/bin")
    assert hccn_conf.query([0, 1, 2, 3], SAMPLE) == {d: SAMPLE_IPS[d] for d in range(4)}


def test_query_tool_fails_and_no_file_names_both(monkeypatch, tmp_path):
    install_fake_tool(tmp_path, fail="*")
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + "/usr/bin:/bin")
    with pytest.raises(HcclError) as caught:
        hccn_conf.query([0], tmp_path / "missing.conf")
    assert "missing.conf: no such file" in str(caught.value)
    assert "hccn_tool -i 0 -ip -g gave no ipaddr" in str(caught.value)


def test_query_missing_device_names_file_and_device(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    conf = tmp_path / "half.conf"
    conf.write_text("address_0=10.0.0.1\naddress_1=10.0.0.2\n")
    with pytest.raises(HcclError, match=r"half\.conf: no address_2= line for device 2 \(it has devices 0,1\)"):
        hccn_conf.query([0, 1, 2], conf)


# ---------------------------------------------------------------- properties

ROBUST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ips = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
unicast_ips = st.tuples(st.integers(1, 223), *[st.integers(0, 255)] * 3).map(lambda t: ".".join(map(str, t)))
noise_line = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, d, v: f"{k}_{d}={v}", st.sampled_from(["netmask", "netdetect", "gateway", "send_arp_status"]),
              st.integers(0, 15), st.text(alphabet=string.printable, max_size=20)),
    st.builds(lambda rest: "address_" + rest, st.text(max_size=30)),
    st.builds(lambda d, ip: f"address_{d}={ip}", st.integers(0, 99999), ips),
    st.just("#address_0=1.2.3.4"),
)


@ROBUST
@given(st.text())
def test_random_text_parses_or_fails_cleanly(text):
    try:
        result = hccn_conf.parse(text, source="fuzz.conf")
    except HcclError as err:
        message = str(err)
        assert message.startswith("fuzz.conf:") and "\n" not in message
    else:
        assert all(isinstance(k, int) and k >= 0 and isinstance(v, str) for k, v in result.items())


@ROBUST
@given(st.lists(noise_line, max_size=30), st.sampled_from(["\n", "\r\n"]))
def test_random_conf_lines_parse_or_fail_cleanly(lines, newline):
    try:
        result = hccn_conf.parse(newline.join(lines), source="fuzz.conf")
    except HcclError as err:
        assert str(err).startswith("fuzz.conf:") and "\n" not in str(err)
    else:
        assert len(set(result.values())) == len(result)


@ROBUST
@given(st.dictionaries(st.integers(0, 64), unicast_ips, max_size=16).filter(lambda d: len(set(d.values())) == len(d)),
       st.lists(noise_line.filter(lambda line: not line.strip().startswith("address_")), max_size=10),
       st.randoms(use_true_random=False))
def test_written_addresses_are_read_back(expected, noise, rnd):
    lines = [f"address_{d}={ip}" for d, ip in expected.items()] + [line.replace("\n", " ").replace("\r", " ")
                                                                    for line in noise]
    rnd.shuffle(lines)
    assert hccn_conf.parse("\n".join(lines)) == expected


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_random_file_bytes_read_or_fail_cleanly(data):
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "h.conf")
        with open(path, "wb") as out:
            out.write(data)
        try:
            hccn_conf.read(path)
        except HcclError as err:
            assert str(err).startswith(path) and "\n" not in str(err)
