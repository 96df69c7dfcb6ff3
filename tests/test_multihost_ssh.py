"""SSH connections and pre-flight against real sshd test hosts (127.0.0.2, 127.0.0.3)."""
import sys
from pathlib import Path

import pytest

from launcher.job.hosts import parse_hosts_arg
from launcher.remote.preflight import PreflightFailed, PreflightRequest, run_preflight
from launcher.remote.ssh import SshOptions, connection, describe_ssh_error, resolve_hosts, run_on_each
from tests.fixtures.sshd import UNREACHABLE_ADDRESS


@pytest.fixture
def ssh_options(sshd_hosts, tmp_path):
    config = sshd_hosts.write_ssh_config(tmp_path / "ssh_config")
    return SshOptions(config_file=config, timeout_s=5)


def test_each_test_host_is_its_own_sshd(sshd_hosts, ssh_options):
    hosts = resolve_hosts(parse_hosts_arg(",".join(h.address for h in sshd_hosts.hosts)), ssh_options)
    result = run_on_each(hosts, lambda host: connection(host, ssh_options).run("echo $SSH_CONNECTION", hide=True).stdout)
    assert not result.failed
    # sshd reports the address it was reached at: each entry reached its own server.
    assert [result[host].split()[2] for host in hosts] == ["127.0.0.2", "127.0.0.3"]
    assert [host.user for host in hosts] == ["root", "root"]  # from the ssh config's User


def test_ssh_config_port_and_duplicate_detection(sshd_hosts, ssh_options, tmp_path):
    first = sshd_hosts.hosts[0]
    # The same sshd written two ways is one host: resolution goes through the ssh config.
    with pytest.raises(ValueError, match="is the same host as"):
        resolve_hosts(parse_hosts_arg(f"{first.address},root@{first.address}:{first.port}"), ssh_options)


def test_unknown_host_key_is_rejected_without_the_flag(sshd_hosts, tmp_path):
    empty_known_hosts = tmp_path / "known_hosts"
    empty_known_hosts.write_text("")
    strict = SshOptions(key_file=sshd_hosts.client_key, known_hosts=empty_known_hosts, timeout_s=5)
    [host] = resolve_hosts(parse_hosts_arg(sshd_hosts.specs()[0]), strict)
    with pytest.raises(Exception) as error:
        connection(host, strict).run("true", hide=True)
    message = describe_ssh_error(error.value, host, strict)
    assert "is not in" in message and "--ssh-accept-unknown-host-keys" in message
    assert empty_known_hosts.read_text() == ""  # nothing was added behind the user's back

    accepting = SshOptions(key_file=sshd_hosts.client_key, known_hosts=empty_known_hosts, timeout_s=5,
                           accept_unknown_host_keys=True)
    assert connection(host, accepting).run("echo ok", hide=True).stdout.strip() == "ok"


def test_wrong_host_key_is_rejected(sshd_hosts, tmp_path):
    # known_hosts that lists 127.0.0.3's key under 127.0.0.2's name: a man-in-the-middle.
    second, first = sshd_hosts.hosts[1], sshd_hosts.hosts[0]
    wrong = tmp_path / "known_hosts"
    key = " ".join(second.host_key_pub.read_text().split()[:2])
    wrong.write_text(f"{first.known_hosts_name} {key}\n")
    options = SshOptions(key_file=sshd_hosts.client_key, known_hosts=wrong, timeout_s=5)
    [host] = resolve_hosts(parse_hosts_arg(sshd_hosts.specs()[0]), options)
    with pytest.raises(Exception) as error:
        connection(host, options).run("true", hide=True)
    assert "does not match" in describe_ssh_error(error.value, host, options)


def test_preflight_passes_and_picks_scheduler_port(sshd_hosts, ssh_options, tmp_path):
    hosts = resolve_hosts(parse_hosts_arg("127.0.0.2,127.0.0.3"), ssh_options)
    request = PreflightRequest(job_dir=tmp_path / "job", platform="CPU", devices={h.host_name: 1 for h in hosts},
                               remote_python=sys.executable, scheduler_port=0)
    reports = run_preflight(hosts, ssh_options, request)
    assert [r.host for r in reports] == ["127.0.0.2", "127.0.0.3"]
    assert reports[0].scheduler_port and reports[1].scheduler_port is None
    assert all(not r.failures for r in reports)
    assert not (tmp_path / "job").exists()  # pre-flight creates nothing


def test_preflight_failure_table_names_host_and_check(sshd_hosts, ssh_options, tmp_path):
    hccn = tmp_path / "hccn.conf"
    hccn.write_text("address_0=192.168.100.101\naddress_1=192.168.100.102\n")
    hosts = resolve_hosts(parse_hosts_arg(f"127.0.0.2,127.0.0.3,root@{UNREACHABLE_ADDRESS}"), ssh_options)
    request = PreflightRequest(job_dir=Path("/proc/version/job"), platform="Ascend",
                               devices={h.host_name: 2 for h in hosts}, remote_python="/nonexistent/python",
                               hccn_conf=str(hccn))
    with pytest.raises(PreflightFailed) as error:
        run_preflight(hosts, ssh_options, request)
    table = str(error.value)
    assert table.startswith("pre-flight failed on 3 of 3 hosts; nothing was started")
    assert f"root@{UNREACHABLE_ADDRESS}  ssh" in table and "connection refused" in table
    assert "/nonexistent/python cannot run the probe" in table

    request = PreflightRequest(job_dir=Path("/proc/version/job"), platform="Ascend",
                               devices={h.host_name: 4 for h in hosts[:2]}, remote_python=sys.executable,
                               hccn_conf=str(hccn))
    with pytest.raises(PreflightFailed) as error:
        run_preflight(hosts[:2], ssh_options, request)
    table = str(error.value)
    assert "4 Ascend devices needed, 2 found by address_N lines" in table
    assert "/proc/version exists and is not a directory" in table or "job_dir" in table


def test_preflight_checks_only_the_imports_the_job_needs(sshd_hosts, ssh_options, tmp_path):
    from launcher.backends.ssh import preflight_imports

    assert preflight_imports(Path("/x/train.py"), None) == ("launcher",)  # --entry: no deeplab needed
    assert preflight_imports(None, None) == ("launcher", "deeplab")
    assert preflight_imports(None, "mypkg.train") == ("launcher", "mypkg")
    hosts = resolve_hosts(parse_hosts_arg("127.0.0.2"), ssh_options)
    request = PreflightRequest(job_dir=tmp_path / "job", platform="CPU", devices={hosts[0].host_name: 1},
                               remote_python=sys.executable, imports=("launcher", "no_such_package_xyz"))
    with pytest.raises(PreflightFailed) as error:
        run_preflight(hosts, ssh_options, request)
    assert "no_such_package_xyz: No module named 'no_such_package_xyz'" in str(error.value)


def test_unknown_user_fails_preflight(sshd_hosts, ssh_options, tmp_path):
    hosts = resolve_hosts(parse_hosts_arg("nosuchuser@127.0.0.2"), ssh_options)
    request = PreflightRequest(job_dir=tmp_path / "job", platform="CPU", devices={}, remote_python=sys.executable)
    with pytest.raises(PreflightFailed) as error:
        run_preflight(hosts, ssh_options, request)
    assert "authentication as 'nosuchuser' failed" in str(error.value)


def _bootstraps(job_dir: Path) -> list:
    """The kept pre-flight sessions' processes on the test hosts (this machine): python -c with the job dir."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if len(cmdline) > 2 and cmdline[1] == "-c" and "def bootstrap" in cmdline[2] and str(job_dir) in cmdline:
            found.append(proc)
    return found


def test_a_kept_preflight_session_waits_and_ends_with_its_connection(sshd_hosts, ssh_options, tmp_path):
    """keep: the probe's session stays open on each host, waiting to become the agent; closing it ends it."""
    import psutil

    hosts = resolve_hosts(parse_hosts_arg("127.0.0.2,127.0.0.3"), ssh_options)
    request = PreflightRequest(job_dir=tmp_path / "job", platform="CPU", devices={h.host_name: 1 for h in hosts},
                               remote_python=sys.executable)
    kept: dict = {}
    reports = run_preflight(hosts, ssh_options, request, keep={"127.0.0.2"}, kept=kept)
    assert all(not r.failures for r in reports) and list(kept) == ["127.0.0.2"]
    [waiting] = _bootstraps(tmp_path / "job")  # only the kept host's probe still runs
    kept["127.0.0.2"].close()
    psutil.wait_procs([waiting], timeout=10)
    assert not waiting.is_running() or waiting.status() == psutil.STATUS_ZOMBIE


def test_a_failed_preflight_keeps_no_session(sshd_hosts, ssh_options, tmp_path):
    hosts = resolve_hosts(parse_hosts_arg("127.0.0.2,127.0.0.3"), ssh_options)
    request = PreflightRequest(job_dir=tmp_path / "job", platform="CPU", devices={h.host_name: 1 for h in hosts},
                               remote_python=sys.executable, imports=("launcher", "no_such_module_here"))
    kept: dict = {}
    with pytest.raises(PreflightFailed, match="no_such_module_here"):
        run_preflight(hosts, ssh_options, request, keep={"127.0.0.2", "127.0.0.3"}, kept=kept)
    assert kept == {}
    import time

    deadline = time.monotonic() + 10
    while _bootstraps(tmp_path / "job") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _bootstraps(tmp_path / "job") == []


def test_a_kept_session_whose_probe_ended_is_not_taken_and_its_connection_still_serves(sshd_hosts, ssh_options,
                                                                                       tmp_path):
    """A probe that gave up waiting (bootstrap's wait ran out; here: killed) is not handed to an agent:
    take_channel() says so, and the start opens a session of its own on the same connection."""
    import time

    from launcher.remote.ssh import run_command

    hosts = resolve_hosts(parse_hosts_arg("127.0.0.2"), ssh_options)
    request = PreflightRequest(job_dir=tmp_path / "job", platform="CPU", devices={h.host_name: 1 for h in hosts},
                               remote_python=sys.executable)
    kept: dict = {}
    run_preflight(hosts, ssh_options, request, keep={"127.0.0.2"}, kept=kept)
    waiting = kept["127.0.0.2"]
    try:
        assert waiting.take_channel() is waiting.channel  # still waiting: it would become the agent
        [probe] = _bootstraps(tmp_path / "job")
        probe.kill()
        deadline = time.monotonic() + 10
        while not waiting.channel.eof_received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting.take_channel() is None and waiting.channel.closed
        assert run_command(waiting.connection, "echo fresh", 10).stdout.strip() == "fresh"
    finally:
        waiting.close()
