"""One deeplab-train job through launch-train, measured: shared by bench/scaling.py and
bench/dp_overhead.py (not a bench itself).

A job is run to completion with its output in a job directory; the numbers come from the
ranks' own log lines (the project's contract, parsed by launcher.collect.logparse):

- train_images_per_s: global batch x 1000 / per-step time, the per-step time being the
  slowest rank's mean over the epochs after the first (the first compiles the graph;
  evaluation runs between epochs and is not in an epoch's time);
- wall_s: launch-train invocation to exit (start-up, compile, evaluations included);
- miou_curve / final_miou_single_scale: rank 0's ``eval at step S (...): mIoU = X`` lines;
- cpu_ms_per_step: CPU time (user + system) of every process of the job (ranks, their data
  workers, the scheduler; found by LAUNCH_TRAIN_JOB_DIR in their environment) between rank
  0's first and last epoch lines, per step -- far less sensitive than wall time to other
  work on the machine (it does not count time spent waiting, e.g. for the slower rank);
  scheduler_cpu_ms_per_step is the scheduler's part;
- load averages (os.getloadavg) just before and just after.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402  (a test dependency of the project)

from launcher.collect.logparse import parse_epoch_time_line, parse_training_log  # noqa: E402  (no MindSpore)

BIN = Path(sys.executable).parent
EVAL_LINE = re.compile(r"^eval at step (\d+) .*mIoU = ([0-9.]+|nan)\s*$")
START_LINE = re.compile(r"global batch (\d+)")


def load() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1m": round(one, 2), "5m": round(five, 2), "15m": round(fifteen, 2)}


@dataclass(frozen=True)
class JobSpec:
    """What to launch: ranks on this host, the training args, launch-train options and extra env."""

    name: str
    devices: int
    train_args: tuple[str, ...]
    launch_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError(f"{self.name}: devices must be >= 1")


@dataclass
class JobResult:
    name: str
    exit_code: int
    wall_s: float
    load_before: dict[str, float]
    load_after: dict[str, float]
    global_batch: Optional[int] = None
    step_ms: Optional[float] = None
    per_rank_step_ms: list[Optional[float]] = field(default_factory=list)
    steps: int = 0
    miou_curve: list[tuple[int, float]] = field(default_factory=list)
    cpu_ms_per_step: Optional[float] = None
    scheduler_cpu_ms_per_step: Optional[float] = None
    job_dir: str = ""
    error: str = ""

    @property
    def train_images_per_s(self) -> Optional[float]:
        if not self.global_batch or not self.step_ms:
            return None
        return self.global_batch * 1000.0 / self.step_ms

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "exit_code": self.exit_code, "wall_s": round(self.wall_s, 2),
            "train_images_per_s": None if self.train_images_per_s is None else round(self.train_images_per_s, 2),
            "global_batch": self.global_batch, "step_ms": None if self.step_ms is None else round(self.step_ms, 2),
            "per_rank_step_ms": [None if v is None else round(v, 2) for v in self.per_rank_step_ms],
            "steps": self.steps, "miou_curve": self.miou_curve,
            "cpu_ms_per_step": None if self.cpu_ms_per_step is None else round(self.cpu_ms_per_step, 2),
            "scheduler_cpu_ms_per_step": (None if self.scheduler_cpu_ms_per_step is None
                                          else round(self.scheduler_cpu_ms_per_step, 2)),
            "final_miou_single_scale": self.miou_curve[-1][1] if self.miou_curve else None,
            "load_before": self.load_before, "load_after": self.load_after, "job_dir": self.job_dir,
            **({"error": self.error} if self.error else {}),
        }


def job_cpu_seconds(marker: str) -> tuple[float, float]:
    """(CPU seconds of every process whose LAUNCH_TRAIN_JOB_DIR is ``marker``, of its scheduler alone)."""
    total = scheduler = 0.0
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
            if env.get("LAUNCH_TRAIN_JOB_DIR") != marker:
                continue
            times = proc.cpu_times()
            used = times.user + times.system
            total += used
            if env.get("MS_ROLE") == "MS_SCHED":
                scheduler += used
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return total, scheduler


class EpochCpuSampler:
    """Samples the job's CPU time at each of rank 0's epoch lines (tails its log in a thread)."""

    def __init__(self, log: Path, marker: str) -> None:
        self.log, self.marker = log, marker
        self.samples: list[tuple[int, float, float]] = []  # (steps so far, job CPU s, scheduler CPU s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "EpochCpuSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        offset, pending, steps = 0, "", 0
        while not self._stop.is_set():
            try:
                with open(self.log, errors="replace") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
                    offset = handle.tell()
            except FileNotFoundError:
                chunk = ""
            pending += chunk
            *lines, pending = pending.split("\n")
            for line in lines:
                timing = parse_epoch_time_line(line)
                if timing is not None and timing.step_time_ms > 0:
                    steps += round(timing.epoch_time_ms / timing.step_time_ms)
                    self.samples.append((steps, *job_cpu_seconds(self.marker)))
            time.sleep(0.05)

    def per_step_ms(self) -> tuple[Optional[float], Optional[float]]:
        """CPU ms per step between the first epoch's end (after the compile) and the last sample."""
        if len(self.samples) < 2 or self.samples[-1][0] <= self.samples[0][0]:
            return None, None
        (s0, c0, k0), (s1, c1, k1) = self.samples[0], self.samples[-1]
        return (c1 - c0) * 1000 / (s1 - s0), (k1 - k0) * 1000 / (s1 - s0)


def run_job(spec: JobSpec, job_dir: Path, timeout: float = 1800) -> JobResult:
    command = [str(BIN / "launch-train"), "--platform", "CPU", "--devices", str(spec.devices),
               "--job-dir", str(job_dir), "--tee", "none", "--status-interval", "3600", *spec.launch_args,
               "--", *spec.train_args]
    env = {**os.environ, **dict(spec.env)}
    before = load()
    t0 = time.monotonic()
    # The launcher marks every process of the job with LAUNCH_TRAIN_JOB_DIR = the job dir as given.
    with EpochCpuSampler(job_dir / "LOG0" / "log.txt", str(job_dir)) as sampler:
        proc = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout, cwd=REPO)
    wall = time.monotonic() - t0
    result = JobResult(spec.name, proc.returncode, wall, before, load(), job_dir=str(job_dir))
    result.cpu_ms_per_step, result.scheduler_cpu_ms_per_step = sampler.per_step_ms()
    if proc.returncode != 0:
        result.error = " | ".join(proc.stdout.strip().splitlines()[-4:])
    logs = []
    for rank in range(spec.devices):
        path = job_dir / f"LOG{rank}" / "log.txt"
        text = path.read_text(errors="replace") if path.exists() else ""
        logs.append((text, parse_training_log(text)))
    result.per_rank_step_ms = [log.mean_step_time_ms for _, log in logs]
    known = [v for v in result.per_rank_step_ms if v is not None]
    result.step_ms = max(known) if known and len(known) == spec.devices else None
    result.steps = max((log.steps for _, log in logs), default=0)
    text0 = logs[0][0] if logs else ""
    match = START_LINE.search(text0)
    result.global_batch = int(match.group(1)) if match else None
    for line in text0.splitlines():
        found = EVAL_LINE.match(line)
        if found:
            result.miou_curve.append((int(found.group(1)), float(found.group(2))))
    return result


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 3) if a is not None and b else None


def train_args(data_root: Path, *extra: str, config: str = "tiny_synthetic") -> tuple[str, ...]:
    return ("--config", config, "--data-root", str(data_root), *extra)


def ensure_demo_data(data_root: Path) -> None:
    """deeplab-synth's default set (the demo's), written once."""
    if not (data_root / "synth.json").is_file():
        subprocess.run([str(BIN / "deeplab-synth"), "--out", str(data_root), "--force"], check=True,
                       stdout=subprocess.DEVNULL)


def sets(*pairs: str) -> tuple[str, ...]:
    out: list[str] = []
    for pair in pairs:
        out += ["--set", pair]
    return tuple(out)


def steps_arg(steps: Optional[int]) -> Sequence[str]:
    return ("--train-steps", str(steps)) if steps else ()
