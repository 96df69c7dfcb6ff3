"""--hosts / --hostfile parsing (pure, no network)."""
import pytest

from launcher.job.hosts import HostEntry, check_distinct, parse_host, parse_hostfile, parse_hosts_arg, read_hostfile


def test_hosts_arg_user_host_port():
    specs = parse_hosts_arg("h1,root@h2,deploy@10.0.0.3:2222,[fe80::1]:23,::1")
    assert [(s.user, s.host, s.port) for s in specs] == [
        (None, "h1", None), ("root", "h2", None), ("deploy", "10.0.0.3", 2222),
        (None, "fe80::1", 23), (None, "::1", None),
    ]
    assert specs[2].label == "deploy@10.0.0.3:2222" and specs[2].name == "10.0.0.3:2222"
    assert specs[3].label == specs[3].name == "[fe80::1]:23"


@pytest.mark.parametrize("value, message", [
    ("h1,,h2", "--hosts entry 2: empty host entry"),
    ("h1:abc", "port 'abc' is not a number"),
    ("h1:0", "port 0 is out of range"),
    ("h1:70000", "port 70000 is out of range"),
    ("@h1", "empty user"),
    ("a;b@h1", "user 'a;b' may only contain"),
    ("h$(id)", "is not a host name or IP address"),
    ("[fe80::1", "without a closing"),
    ("h1,h1:22", "'h1:22' is the same host as 'h1'"),
    ("H1.example.com,h1.example.com.", "is the same host as"),
])
def test_hosts_arg_errors_are_one_line(value, message):
    with pytest.raises(ValueError) as error:
        parse_hosts_arg(value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_hostfile_deepspeed_format_with_comments(tmp_path):
    path = tmp_path / "hostfile"
    path.write_text("# cluster\nworker-1 slots=8\n\n  root@10.0.0.2:2222   slots=4  # fast one\n10.0.0.3\n")
    specs = read_hostfile(path)
    assert [(s.label, s.slots) for s in specs] == [("worker-1", 8), ("root@10.0.0.2:2222", 4), ("10.0.0.3", None)]
    assert specs[1].source == f"{path}:4"


@pytest.mark.parametrize("text, message", [
    ("h1 slots=x\n", "hostfile:1: slots='x' is not a whole number"),
    ("h1\nh2 slots=0\n", "hostfile:2: slots=0 must be at least 1"),
    ("h1 gpus=2\n", "hostfile:1: unexpected 'gpus=2'"),
    ("h1 slots=1 slots=2\n", "hostfile:1: slots given twice"),
    ("# nothing\n\n", "hostfile: no hosts"),
    ("h1\nroot@h2\nh1 slots=2\n", "hostfile:3: 'h1' is the same host as 'h1' (hostfile:1)"),
])
def test_hostfile_errors_name_file_and_line(text, message):
    with pytest.raises(ValueError, match=None) as error:
        parse_hostfile(text, "hostfile")
    assert message in str(error.value)


def test_unreadable_hostfile_is_one_line(tmp_path):
    with pytest.raises(ValueError) as error:
        read_hostfile(tmp_path / "missing")
    assert str(error.value).startswith(f"--hostfile {tmp_path / 'missing'}: cannot read")


def test_duplicates_by_resolved_address():
    specs = [parse_host("a"), parse_host("b")]
    check_distinct(specs)  # literally different
    with pytest.raises(ValueError, match="'b' is the same host as 'a'"):
        check_distinct(specs, resolve=lambda spec: ("10.0.0.1", 22))


def test_host_entry_validates_directly():
    with pytest.raises(ValueError, match="slots=0"):
        HostEntry("h", slots=0)
    with pytest.raises(ValueError, match="a user or port means SSH"):
        HostEntry("localhost", user="root", local=True)


@pytest.mark.parametrize("flags, message", [
    (["--hosts", "root@127.0.0.2", "--hostfile", "hosts.txt"], "--hosts and --hostfile: give one of them"),
    (["--hostfile", "missing.txt"], "--hostfile missing.txt: cannot read: No such file or directory"),
    (["--hosts", "root@127.0.0.2", "--ssh-config", "missing"], "--ssh-config missing: no such file"),
    (["--hosts", "nosuchhost.invalid"], "cannot resolve host 'nosuchhost.invalid'"),
    (["--hosts", "root@127.0.0.2", "--ssh-timeout", "0"], "--ssh-timeout 0.0: must be a positive number"),
    (["--hosts", "127.0.0.2,127.0.0.2:22"], "'127.0.0.2:22' is the same host as '127.0.0.2'"),
    (["--hosts", "a;b@h1"], "user 'a;b' may only contain"),
])
def test_launch_train_rejects_bad_multi_host_flags_in_one_line(tmp_path, flags, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "launcher.cli", *flags, "--platform", "CPU",
                           "--job-dir", str(tmp_path / "job")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("launch-train: error: ") and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "job").exists()
