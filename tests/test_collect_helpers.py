"""Hand-built job directories in the exact job.json / log formats of CONTRACTS.md.

Used by the collect-results tests before (and besides) the real launcher fixtures.
No tests live here.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RankSpec:
    rank: int
    host: str = "localhost"
    losses: list[float] = field(default_factory=lambda: [0.9, 0.7, 0.5, 0.4])
    steps_per_epoch: int = 2
    step_time_ms: float = 100.0
    first_step_time_ms: float | None = None  # the first epoch compiles: slower
    exit_code: int | None = 0
    signal: str | None = None
    truncate: str = ""  # text appended without newline (a cut-off last line)
    ckpts: dict[str, int] = field(default_factory=dict)  # name -> size in bytes
    eval_miou: float | None = None
    eval_ckpt: str = ""
    config_batch_size: int | None = None
    extra_lines: list[str] = field(default_factory=list)
    write_dir: bool = True


def log_text(spec: RankSpec) -> str:
    lines = ["[WARNING] ME(123:456,MainProcess):2026-11-26-05:00:00.000.000 [mindspore/x.py:1] noise",
             "compiling graph ..."]
    for index, loss in enumerate(spec.losses):
        epoch, step = divmod(index, spec.steps_per_epoch)
        lines.append(f"epoch: {epoch + 1} step: {step + 1}, loss is {loss}")
        if step + 1 == spec.steps_per_epoch:
            per_step = spec.first_step_time_ms if epoch == 0 and spec.first_step_time_ms else spec.step_time_ms
            lines.append(f"Epoch time: {per_step * spec.steps_per_epoch:.3f}, per step time: {per_step:.3f}")
    lines += spec.extra_lines
    return "\n".join(lines) + "\n" + spec.truncate


def make_job(root: Path, ranks: list[RankSpec], job_id: str = "job-20261126-0001", hosts: list[dict] | None = None,
             args: list[str] | None = None, state: str = "succeeded", host_dirs: dict[str, Path] | None = None) -> Path:
    """Write <root>/<job_id>/job.json and each rank's LOG dir; return the job dir.

    host_dirs maps a (remote) host name to the directory where that host's LOG dirs live.
    """
    job_dir = root / job_id
    job_dir.mkdir(parents=True)
    hosts = hosts or [{"name": "localhost", "address": "127.0.0.1", "user": None, "port": 22, "local": True, "slots": len(ranks)}]
    args = args if args is not None else ["--config", "tiny_synthetic", "--set", "batch_size=4"]
    failed = [r for r in ranks if r.signal or r.exit_code not in (None, 0)]
    first = sorted(failed, key=lambda r: r.signal is not None)[0] if failed else None  # killed ranks follow the cause
    doc = {
        "schema": 1, "job_id": job_id, "job_dir": str(job_dir), "created": "2026-11-26T05:00:00+00:00",
        "platform": "CPU", "mode": "dynamic", "hosts": hosts, "entry": {"module": "deeplab.train"}, "args": args,
        "rank_size": len(ranks), "env": {},
        "scheduler": {"host": hosts[0]["name"], "address": hosts[0]["address"], "port": 8118, "log": "scheduler/log.txt"},
        "ranks": [{"rank": r.rank, "host": r.host, "local_index": r.rank, "device_id": r.rank, "log_dir": f"LOG{r.rank}",
                   "env": {"RANK_ID": str(r.rank)}, "command": ["python", "-m", "deeplab.train"], "cpus": None} for r in ranks],
        "status": {
            "state": state, "started": "2026-11-26T05:00:00+00:00", "ended": "2026-11-26T05:01:00+00:00",
            "wall_time_s": 60.0, "exit_code": first.exit_code if first else 0, "restarts": 0,
            "ranks": [{"rank": r.rank, "host": r.host, "exit_code": r.exit_code, "signal": r.signal,
                       "started": None, "ended": None, "duration_s": 59.0} for r in ranks],
            "first_failure": None if first is None else {
                "rank": first.rank, "host": first.host, "exit_code": first.exit_code, "signal": first.signal,
                "log": f"LOG{first.rank}/log.txt", "tail": "recorded tail"},
        },
    }
    (job_dir / "job.json").write_text(json.dumps(doc, indent=2))
    (job_dir / "scheduler").mkdir()
    (job_dir / "scheduler" / "log.txt").write_text("scheduler started\n")
    for spec in ranks:
        if not spec.write_dir:
            continue
        base = (host_dirs or {}).get(spec.host, job_dir)
        log_dir = base / f"LOG{spec.rank}"
        (log_dir / "ckpt").mkdir(parents=True)
        (log_dir / "log.txt").write_text(log_text(spec))
        (log_dir / "env.sh").write_text(f"export RANK_ID={spec.rank}\n")
        for index, (name, size) in enumerate(sorted(spec.ckpts.items())):
            path = log_dir / "ckpt" / name
            path.write_bytes(os.urandom(size))
            os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))
        if spec.config_batch_size is not None:
            (log_dir / "config.yaml").write_text(f"backbone: tiny\nbatch_size: {spec.config_batch_size}\n")
        if spec.eval_miou is not None:
            per_class = {"background": 0.9, "aeroplane": spec.eval_miou, "bicycle": None}
            (log_dir / "eval.json").write_text(json.dumps({
                "mIoU": spec.eval_miou, "per_class_iou": per_class, "ckpt": spec.eval_ckpt, "scales": [1.0],
                "flip": False, "num_images": 4}))
    return job_dir


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
