"""DeepLabV3 training throughput on the CPU: this project's MindSpore model vs torchvision.

Usage:
    .venv/bin/python bench/train_throughput.py --config voc_r101_os16 --crop 257 --batch 2 \
        [--steps 5] [--warmup 2] [--threads 2] [--rounds 3] [--set key=value ...] [--no-torch]
        [--allow-loaded]

Each framework runs in its own subprocess (so peak RSS is its own, read from wait4):
a full training step -- forward, cross-entropy, backward, Momentum/SGD update -- on a
random batch, timed after warm-up. MindSpore runs build_model(cfg) in GRAPH_MODE with
the deeplab.cpu_tuning environment; PyTorch runs torchvision's DeepLabV3 (DeepLabHead)
on the same ResNet at the same output stride (torchvision's own builder at OS8; at OS16
the same classes on a ResNet whose last stage only is dilated). The two alternate --rounds
times (default 3: MindSpore, torchvision, MindSpore, ...) and the medians are reported, which
evens out a changing machine load; every round records the load average before and after it.

A machine whose 1-minute load average exceeds its usable cores (other work running) gives
figures that say more about that work than about the frameworks: such a run is refused
(exit 2, one line) unless --allow-loaded, which runs it and marks it "loaded": true, with the
load printed beside the ratio.

PyTorch is not a project dependency; it lives in its own venv:
    python3 -m venv bench/.venv-torch && \
        bench/.venv-torch/bin/pip install torch==2.14.1 torchvision==0.29.1
(--create-torch-venv runs exactly that; --torch-python picks another interpreter.)
The tiny backbone has no torchvision counterpart: with --config tiny_synthetic only
MindSpore is measured.

Prints one JSON object: images/s, images per CPU-second (less sensitive to other load
on the machine), graph compile seconds, peak RSS, the MindSpore/torchvision ratios, the
target (>= 1.0x images/s at <= 1.2x peak memory) and the host load before and after.
Bad input: one line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
TORCH_VENV = BENCH_DIR / ".venv-torch"
TORCH_PACKAGES = ("torch==2.14.1", "torchvision==0.29.1")
TORCHVISION_BACKBONES = ("resnet101", "resnet50")
TARGET_SPEED_RATIO = 1.0
TARGET_MEMORY_RATIO = 1.2

sys.path.insert(0, str(REPO_DIR))


class BenchError(Exception):
    """Bad input or a failed worker; the message is the one line shown."""


def run_worker(command: list[str]) -> dict[str, Any]:
    """Run one measuring subprocess; its JSON line plus its own peak RSS (from wait4) and the load around it."""
    load_before = host_load()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=REPO_DIR)
    try:
        stdout, stderr = _communicate(process)
    except BaseException:  # Ctrl-C: leave no measuring process behind
        process.kill()
        process.wait()
        raise
    _, status, usage = os.wait4(process.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        tail = " | ".join(stderr.strip().splitlines()[-3:])
        raise BenchError(f"worker {Path(command[1]).name} failed (exit {code}): {tail}")
    result = json.loads(lines[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # ru_maxrss is KiB on Linux
    result["load_before"], result["load_after"] = load_before, host_load()
    return result


def _communicate(process: subprocess.Popen) -> tuple[str, str]:
    # Read both pipes to EOF without reaping the child, so wait4 can still report its rusage.
    import threading

    chunks: dict[str, str] = {}

    def drain(name: str, stream) -> None:
        chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(name, stream))
               for name, stream in (("out", process.stdout), ("err", process.stderr))]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return chunks["out"], chunks["err"]


def mindspore_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, str(BENCH_DIR / "_mindspore_train_step.py"), "--config", args.config,
               "--crop", str(args.crop), "--batch", str(args.batch), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--threads", str(args.threads)]
    for override in args.overrides:
        command += ["--set", override]
    return command


def torch_command(args: argparse.Namespace, cfg) -> list[str]:
    return [str(args.torch_python), str(BENCH_DIR / "_torch_train_step.py"), "--backbone", cfg.backbone,
            "--output-stride", str(cfg.output_stride), "--num-classes", str(cfg.seg_num_classes),
            "--crop", str(args.crop), "--batch", str(args.batch), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--threads", str(args.threads), "--lr", str(cfg.learning_rate),
            "--momentum", str(cfg.momentum), "--weight-decay", str(cfg.weight_decay)]


def create_torch_venv() -> None:
    subprocess.run(["python3", "-m", "venv", str(TORCH_VENV)], check=True)
    subprocess.run([str(TORCH_VENV / "bin" / "pip"), "install", "-q", *TORCH_PACKAGES], check=True)


def median_result(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The first round's descriptive fields with every measured number replaced by its median."""
    merged = dict(rounds[0])
    for key in ("images_per_s", "images_per_cpu_s", "step_s_median", "first_step_s", "graph_compile_s",
                "peak_rss_mb"):
        merged[key] = round(statistics.median(r[key] for r in rounds), 4)
    if len(rounds) > 1:
        merged["images_per_s_rounds"] = [round(r["images_per_s"], 4) for r in rounds]
    merged["load_1m_rounds"] = [[r["load_before"]["loadavg_1m"], r["load_after"]["loadavg_1m"]] for r in rounds]
    merged.pop("load_before", None)
    merged.pop("load_after", None)
    return merged


def ratio(numerator: float, denominator: float) -> Optional[float]:
    return round(numerator / denominator, 3) if denominator else None


def host_load() -> dict[str, Any]:
    load1, load5, _ = os.getloadavg()
    return {"loadavg_1m": round(load1, 2), "loadavg_5m": round(load5, 2)}


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from deeplab.config import ConfigError, load_config
    from deeplab.cpu_tuning import available_cores

    try:
        cfg = load_config(args.config, [f"crop_size={args.crop}", f"batch_size={args.batch}", *args.overrides])
    except ConfigError as exc:
        raise BenchError(f"--config/--set: {exc}") from None
    with_torch = not args.no_torch and cfg.backbone in TORCHVISION_BACKBONES
    if with_torch and not Path(args.torch_python).exists():
        if not args.create_torch_venv:
            raise BenchError(f"--torch-python {args.torch_python}: not found; create it with: python3 -m venv "
                             f"bench/.venv-torch && bench/.venv-torch/bin/pip install {' '.join(TORCH_PACKAGES)} "
                             f"(or pass --create-torch-venv, or --no-torch)")
        create_torch_venv()

    cores = available_cores()
    load_now = host_load()
    loaded = load_now["loadavg_1m"] > cores
    if loaded and not args.allow_loaded:
        raise BenchError(f"load average {load_now['loadavg_1m']} exceeds the {cores} usable cores: the figures "
                         "would measure the other work; run on a quiet machine or pass --allow-loaded")
    report: dict[str, Any] = {
        "config": args.config, "crop": args.crop, "batch": args.batch, "threads": args.threads,
        "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
        "host": {"cores": os.cpu_count(), "cores_available": available_cores(), "before": host_load()},
    }
    ms_rounds, torch_rounds = [], []
    for _ in range(args.rounds):
        ms_rounds.append(run_worker(mindspore_command(args)))
        if with_torch:
            torch_rounds.append(run_worker(torch_command(args, cfg)))
    report["host"]["after"] = host_load()
    rounds_load = [r["load_before"]["loadavg_1m"] for r in ms_rounds + torch_rounds] + [
        r["load_after"]["loadavg_1m"] for r in ms_rounds + torch_rounds]
    report["loaded"] = loaded or max(rounds_load) > cores
    report["mindspore"] = median_result(ms_rounds)
    report["torchvision"] = median_result(torch_rounds) if torch_rounds else None
    if torch_rounds:
        ms, tv = report["mindspore"], report["torchvision"]
        report["ratio_mindspore_over_torchvision"] = {
            "images_per_s": ratio(ms["images_per_s"], tv["images_per_s"]),
            "images_per_cpu_s": ratio(ms["images_per_cpu_s"], tv["images_per_cpu_s"]),
            "peak_rss": ratio(ms["peak_rss_mb"], tv["peak_rss_mb"]),
            "load_1m_min_max": [min(rounds_load), max(rounds_load)],
        }
        speed, memory = (report["ratio_mindspore_over_torchvision"][k] for k in ("images_per_s", "peak_rss"))
        report["target"] = {"images_per_s_ratio_min": TARGET_SPEED_RATIO, "peak_rss_ratio_max": TARGET_MEMORY_RATIO,
                            "met": speed >= TARGET_SPEED_RATIO and memory <= TARGET_MEMORY_RATIO}
    else:
        report["ratio_mindspore_over_torchvision"] = None
        report["torchvision_skipped"] = ("--no-torch" if args.no_torch else
                                         f"torchvision has no counterpart of the {cfg.backbone!r} backbone")
    return report


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="voc_r101_os16", help="preset name or YAML file")
    parser.add_argument("--crop", type=positive_int, default=257)
    parser.add_argument("--batch", type=positive_int, default=2)
    parser.add_argument("--steps", type=positive_int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first (compile) step")
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternate the frameworks N times")
    parser.add_argument("--allow-loaded", action="store_true",
                        help="run even when the load average exceeds the cores (the report says loaded)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--torch-python", default=str(TORCH_VENV / "bin" / "python"))
    parser.add_argument("--create-torch-venv", action="store_true")
    parser.add_argument("--no-torch", action="store_true")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    try:
        report = benchmark(args)
    except BenchError as exc:
        print(f"train_throughput: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
