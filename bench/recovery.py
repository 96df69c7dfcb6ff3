"""Recovery from a lost host: real sshd hosts, the real trainer, one host killed mid-training; prints JSON.

Run as root (it starts sshd):  .venv/bin/python bench/recovery.py [--train-steps N] [--kill-at-step K]

Four sshd "hosts" on loopback (127.0.2.2-5). Three run a job of the demo preset (tiny_synthetic,
1 rank each, global batch 12 so that it divides over 3 ranks and over 2); the fourth is the spare.
Three runs, each paired against the same settings:
  undisturbed   3 hosts, nothing happens: the reference mIoU
  spare         3 hosts + --spare-hosts h4; at step K every process of host 2 is killed and its
                sshd stopped (a machine that died): the spare takes its place
  min_hosts     3 hosts, no spare, --min-hosts 2; the same fault: the job goes on with 2 hosts
For the disturbed runs: the time from the fault to the launcher's detection (its "restarting"
line), to the new attempt's start (job.json status.attempts), and to the first training step of
the new attempt; the final plan's hosts; the hosts excluded; the global batch of the last
attempt (its start-up line); the final mIoU against the undisturbed run's. The load average is
printed before and after every run: figures taken on a loaded machine say little.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.sshd import start_sshd_hosts, stop_sshd_hosts  # noqa: E402

ADDRESSES = ("127.0.2.2", "127.0.2.3", "127.0.2.4", "127.0.2.5")
BIN = Path(sys.executable).parent
MIOU = re.compile(r"eval at step (\d+) .*mIoU = ([0-9.]+)")
STEP = re.compile(r"^epoch: \d+ step: \d+, loss is ")


def load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _utc(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _steps(log: Path) -> int:
    try:
        return sum(1 for line in log.read_text(errors="replace").splitlines() if STEP.match(line))
    except OSError:
        return 0


def _stderr_lines(proc: subprocess.Popen, sink: list) -> threading.Thread:
    def read() -> None:
        for line in proc.stderr:
            sink.append((time.time(), line.rstrip("\n")))
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def run(name: str, work: Path, hosts, data: Path, steps: int, *, spare: bool, min_hosts: bool,
        kill_at: int | None) -> dict:
    config = hosts.write_ssh_config(work / f"{name}-ssh_config")
    job_dir = work / name
    planned = [f"root@{h.address}" for h in hosts.hosts[:3]]
    args = [sys.executable, "-m", "launcher.cli", "--ssh-config", str(config), "--hosts", ",".join(planned),
            "--platform", "CPU", "--devices", "1", "--job-dir", str(job_dir), "--max-restarts", "2",
            "--tee", "none", "--status-interval", "1000", "--heartbeat-timeout", "10"]
    if spare:
        args += ["--spare-hosts", f"root@{hosts.hosts[3].address}"]
    if min_hosts:
        args += ["--min-hosts", "2"]
    args += ["--", "--config", "tiny_synthetic", "--data-root", str(data), "--train-steps", str(steps),
             "--set", "global_batch_size=12", "--set", f"eval_every_epochs={max(1, steps // 25)}"]
    before = load()
    t0 = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=work)
    lines: list = []
    reader = _stderr_lines(proc, lines)
    fault_at = first_new_step_at = None
    log0 = job_dir / "LOG0" / "log.txt"
    if kill_at is not None:
        while _steps(log0) < kill_at and proc.poll() is None:
            time.sleep(0.05)
        victim = hosts.processes[1]  # host 2: its sshd and everything below it (agent, keepers, ranks)
        import psutil

        tree = [victim.pid] + [child.pid for child in psutil.Process(victim.pid).children(recursive=True)]
        fault_at = time.time()
        for pid in tree:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        while proc.poll() is None and first_new_step_at is None:
            text = log0.read_text(errors="replace") if log0.exists() else ""
            if "==== launch-train: restart 1:" in text:
                after = text.split("==== launch-train: restart 1:")[1]
                if any(STEP.match(line) for line in after.splitlines()):
                    first_new_step_at = time.time()
            time.sleep(0.05)
    proc.wait()
    reader.join(timeout=5)
    wall = time.time() - t0
    document = json.loads((job_dir / "job.json").read_text())
    status = document["status"]
    log_text = log0.read_text(errors="replace")
    last_attempt = log_text.split("==== launch-train: restart")[-1]
    evals = MIOU.findall(log_text)
    batch = re.search(r"global batch (\d+)", last_attempt)
    result = {
        "exit_code": proc.returncode, "state": status["state"], "wall_s": round(wall, 1),
        "final_hosts": [h["name"] for h in document["hosts"]], "rank_size": document["rank_size"],
        "excluded_hosts": [e["host"] for e in status.get("excluded_hosts", [])],
        "spares_taken": [e["host"] for e in status.get("spare_hosts", [])],
        "restarts": status["restarts"],
        "final_step": int(evals[-1][0]) if evals else None,
        "final_miou": float(evals[-1][1]) if evals else None,
        "global_batch_last_attempt": int(batch.group(1)) if batch else None,
        "load_before": before, "load_after": load(),
    }
    if fault_at is not None:
        detected = next((at for at, line in lines if "restarting the whole job" in line), None)
        attempts = status.get("attempts") or []
        restart_at = _utc(attempts[1]["started"]) if len(attempts) > 1 else None
        result.update({
            "fault_at_step": kill_at,
            "fault_to_detection_s": round(detected - fault_at, 2) if detected else None,
            "fault_to_new_attempt_s": round(restart_at - fault_at, 2) if restart_at else None,
            "fault_to_first_new_step_s": round(first_new_step_at - fault_at, 2) if first_new_step_at else None,
        })
    return result


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-steps", type=int, default=1480, help="the demo's 1480 by default")
    parser.add_argument("--kill-at-step", type=int, default=None, help="default: a third of the steps")
    parser.add_argument("--runs", default="undisturbed,spare,min_hosts")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(json.dumps({"bench": "recovery", "skipped": "needs root to start sshd"}))
        return 0
    kill_at = args.kill_at_step or max(5, args.train_steps // 3)
    work = Path(tempfile.mkdtemp(prefix="recovery-"))
    data = work / "data"
    subprocess.run([str(BIN / "deeplab-synth"), "--out", str(data)], check=True, capture_output=True)
    (work / "sshd").mkdir()
    hosts = start_sshd_hosts(work / "sshd", addresses=ADDRESSES)
    out: dict = {"bench": "recovery", "train_steps": args.train_steps, "hosts": 3, "spares": 1, "load_start": load()}
    try:
        for name in args.runs.split(","):
            if name in out:
                continue
            if name != "undisturbed" and hosts.processes[1].poll() is not None:
                stop_sshd_hosts(hosts)  # host 2 was killed by the previous run: bring all four up again
                (work / f"sshd-{name}").mkdir()
                hosts = start_sshd_hosts(work / f"sshd-{name}", addresses=ADDRESSES)
            out[name] = run(name, work, hosts, data, args.train_steps, spare=name == "spare",
                            min_hosts=name == "min_hosts", kill_at=None if name == "undisturbed" else kill_at)
            print(json.dumps({name: out[name]}), file=sys.stderr, flush=True)
    finally:
        stop_sshd_hosts(hosts)
    reference = (out.get("undisturbed") or {}).get("final_miou")
    for name in ("spare", "min_hosts"):
        if name in out and reference is not None and out[name]["final_miou"] is not None:
            out[name]["miou_minus_undisturbed"] = round(out[name]["final_miou"] - reference, 4)
    out["load_end"] = load()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
