"""A host whose sshd offers no SFTP subsystem still runs jobs: launch-train copies nothing over SFTP
(its files go down the agent's own channel, launcher/remote/file_stream.py)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_a_job_runs_on_a_host_without_sftp(tmp_path: Path, no_sftp_host):
    payload = tmp_path / "payload.py"
    payload.write_text("import os\nprint('epoch: 1 step: 1, loss is 0.5', os.environ['RANK_ID'], flush=True)\n")
    host = f"root@{no_sftp_host['address']}:{no_sftp_host['port']}"
    done = subprocess.run([sys.executable, "-m", "launcher.cli", "--hosts", host, "--platform", "CPU", "--devices", "2",
                           "--ssh-key", str(no_sftp_host["key"]), "--ssh-accept-unknown-host-keys", "--ssh-timeout", "5",
                           "--entry", str(payload), "--tee", "all", "--job-dir", str(tmp_path / "job")],
                          capture_output=True, text=True, timeout=180, cwd=REPO, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "job" / "job.json").read_text())["status"]["state"] == "succeeded"
    assert "loss is 0.5 1" in done.stdout  # rank 1's line, from the agent on that host
