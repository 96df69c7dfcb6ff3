"""deeplab-train as a real process on the synthetic VOC set: logging, loss, checkpoints,
resume after SIGKILL, SIGTERM, data-parallel over a real dynamic cluster, bad inputs.

Slow-ish (real MindSpore runs, ~1 thread each): every run uses the tiny_synthetic model,
4-image batches and a handful of steps.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deeplab import cpu_tuning

cpu_tuning.apply_to_environ(threads=1)  # before this process imports MindSpore (checkpoint reading)

from deeplab.checkpoints import checkpoint_name, list_checkpoints, read_checkpoint, verify_crc  # noqa: E402
from tests.fixtures.processes import read_until  # noqa: E402

pytestmark = pytest.mark.slow

STEP_LINE = re.compile(r"^epoch: (\d+) step: (\d+), loss is (\d+\.\d{5})$")
EPOCH_LINE = re.compile(r"^Epoch time: \d+\.\d{3}, per step time: \d+\.\d{3}$")
FAST = ["--set", "threads=1", "--set", "num_parallel_workers=1", "--set", "batch_size=4"]
RUN_TIMEOUT = 240


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MS_", "OMPI_", "RANK_", "PMIX_", "LAUNCH_TRAIN_"))
           and k not in ("DEVICE_ID", "DEVICE_TARGET", "OMP_NUM_THREADS")}
    env.update(extra)
    return env


def _train_cmd(data_root: Path, ckpt_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "deeplab.train", "--config", "tiny_synthetic", "--data-root", str(data_root),
            "--ckpt-dir", str(ckpt_dir), *FAST, *args]


def run_train(data_root: Path, ckpt_dir: Path, *args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(_train_cmd(data_root, ckpt_dir, *args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, env=env or _env(), cwd=cwd)


def step_lines(stdout: str) -> list[tuple[int, int, float]]:
    return [(int(m[1]), int(m[2]), float(m[3])) for m in map(STEP_LINE.match, stdout.splitlines()) if m]


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[WARNING]")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_loss_falls_logs_have_the_reference_format_and_checkpoints_rotate(synthetic_voc, tmp_path):
    ckpt = tmp_path / "ckpt"
    proc = run_train(synthetic_voc, ckpt, "--train-steps", "10", "--set", "save_checkpoint_steps=4",
                     "--set", "save_checkpoint_num=2", "--set", "learning_rate=0.05")
    assert proc.returncode == 0, proc.stderr
    steps = step_lines(proc.stdout)
    # 16 images, batch 4: 4 steps per epoch; 10 steps = epochs 1, 2 and half of 3.
    assert [(e, s) for e, s, _ in steps] == [(1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4),
                                             (3, 1), (3, 2)]
    assert len([line for line in proc.stdout.splitlines() if EPOCH_LINE.match(line)]) == 3
    losses = [loss for _, _, loss in steps]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:2]), losses
    # Saved at steps 4, 8 and the final 10; the newest two kept.
    assert [step for step, _ in list_checkpoints(ckpt)] == [8, 10]
    assert all(verify_crc(path) for _, path in list_checkpoints(ckpt))
    assert (ckpt / "config.yaml").is_file() and "tiny" in (ckpt / "config.yaml").read_text()
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]


def _wait_for_line(proc: subprocess.Popen, pattern: re.Pattern, collected: list[str]) -> None:
    found, lines = read_until(proc, lambda line: bool(pattern.match(line.rstrip("\n"))), RUN_TIMEOUT)
    collected.extend(line.rstrip("\n") for line in lines)
    if not found:
        raise AssertionError(f"no {pattern.pattern} within {RUN_TIMEOUT}s (or the process ended): {collected[-5:]}")


def test_resume_after_sigkill_mid_training_reaches_the_same_final_step(synthetic_voc, tmp_path):
    ckpt = tmp_path / "ckpt"
    # Save every step so that the kill very likely lands during or near a checkpoint write.
    cmd = _train_cmd(synthetic_voc, ckpt, "--train-steps", "12", "--set", "save_checkpoint_steps=1",
                     "--set", "save_checkpoint_num=2")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(),
                            start_new_session=True)
    seen: list[str] = []
    try:
        _wait_for_line(proc, re.compile(r"^epoch: 2 step: 1, "), seen)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    survivors = list_checkpoints(ckpt)
    assert survivors, "no checkpoint survived the kill"
    for _step, path in survivors:  # whatever the kill interrupted, final names hold whole files
        assert verify_crc(path)
        read_checkpoint(path)
    killed_at = survivors[-1][0]
    assert 4 <= killed_at < 12

    # Debris a crash can leave: a partial-write directory of a dead process and a stray temp
    # file with a higher step; resume must ignore both.
    debris = ckpt / ".partial-deeplab-4194303"
    debris.mkdir(exist_ok=True)
    (debris / checkpoint_name(99)).write_bytes(b"half a checkpoint")
    (ckpt / "deeplab-step000099.tmp").write_bytes(b"half")

    resumed = run_train(synthetic_voc, ckpt, "--train-steps", "12", "--set", "save_checkpoint_steps=1",
                        "--set", "save_checkpoint_num=2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from {ckpt / checkpoint_name(killed_at)} at step {killed_at}" in resumed.stdout
    steps = step_lines(resumed.stdout)
    assert len(steps) == 12 - killed_at
    first_epoch, first_step = divmod(killed_at, 4)
    assert steps[0][:2] == (first_epoch + 1, first_step + 1)
    assert steps[-1][:2] == (3, 4)
    assert "training done at step 12" in resumed.stdout
    final = read_checkpoint(ckpt / checkpoint_name(12))
    assert int(final["deeplab_step"].asnumpy()) == 12
    assert int(final["global_step"].asnumpy()[0]) == 12  # the optimizer's own counter continued
    assert not debris.exists()

    again = run_train(synthetic_voc, ckpt, "--train-steps", "12", "--resume")
    assert again.returncode == 0 and "nothing to train" in again.stdout


def test_sigterm_stops_training_promptly(synthetic_voc, tmp_path):
    cmd = _train_cmd(synthetic_voc, tmp_path / "ckpt", "--train-steps", "100000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            start_new_session=True)
    try:
        _wait_for_line(proc, STEP_LINE, [])
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    with pytest.raises(ProcessLookupError):  # nothing of the run's process group is left
        os.killpg(proc.pid, 0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SCHEDULER = "import mindspore as ms; ms.set_device('CPU'); from mindspore.communication import init; init()"


@dataclass
class _Cluster:
    """A started scheduler + 2 deeplab-train workers; each rank's output goes to LOG<rank>/output.txt."""
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]
    rank_dirs: list[Path]

    def finish(self) -> list[tuple[int, str]]:
        """Wait for the workers, then the scheduler; (exit code, output) per rank. Nothing is left running."""
        try:
            for worker in self.workers:
                worker.wait(timeout=RUN_TIMEOUT)
            self.scheduler.wait(timeout=60)
        finally:
            self.kill()
        return [(worker.returncode, (rank_dir / "output.txt").read_text())
                for worker, rank_dir in zip(self.workers, self.rank_dirs)]

    def kill(self) -> None:
        for proc in [self.scheduler, *self.workers]:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _start_cluster(tmp_path: Path, synthetic_voc: Path, ckpt_dirs: list[Path], *args: str) -> _Cluster:
    """A real MindSpore scheduler + 2 deeplab-train workers on loopback, started in tmp_path.

    Two clusters may run at once (each has a port of its own): most of a cluster's time is MindSpore
    waiting (the workers' topology and address polls, the shutdown), not computing. Outputs go to
    files, so no one has to drain a pipe meanwhile.
    """
    port = str(_free_port())
    common = {"MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": port, "MS_WORKER_NUM": "2"}
    tmp_path.mkdir(exist_ok=True)
    scheduler = subprocess.Popen([sys.executable, "-c", SCHEDULER], env=_env(MS_ROLE="MS_SCHED", **common),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                                 start_new_session=True)
    cluster = _Cluster(scheduler, [], [tmp_path / f"LOG{rank}" for rank in range(2)])
    try:
        for rank, rank_dir in enumerate(cluster.rank_dirs):
            rank_dir.mkdir(exist_ok=True)
            with open(rank_dir / "output.txt", "w") as output:
                cluster.workers.append(subprocess.Popen(
                    _train_cmd(synthetic_voc, ckpt_dirs[rank], "--set", "batch_size=2", *args),
                    env=_env(MS_ROLE="MS_WORKER", MS_NODE_ID=str(rank), RANK_ID=str(rank), **common),
                    stdout=output, stderr=subprocess.STDOUT, cwd=rank_dir, start_new_session=True))
    except BaseException:
        cluster.kill()
        raise
    return cluster


def _run_cluster(tmp_path: Path, synthetic_voc: Path, ckpt_dirs: list[Path], *args: str) -> list[tuple[int, str]]:
    """A real MindSpore scheduler + 2 deeplab-train workers on loopback; (exit code, output) per rank."""
    return _start_cluster(tmp_path, synthetic_voc, ckpt_dirs, *args).finish()


def test_two_rank_data_parallel_over_a_dynamic_cluster_and_its_resume(synthetic_voc, tmp_path):
    shared = tmp_path / "shared-ckpt"
    for code, out in _run_cluster(tmp_path, synthetic_voc, [shared, shared], "--train-steps", "3"):
        assert code == 0, out
        # 16 images over 2 ranks, batch 2: 4 steps per epoch per rank.
        assert [(e, s) for e, s, _ in step_lines(out)] == [(1, 1), (1, 2), (1, 3)], out
    assert [s for s, _ in list_checkpoints(shared)] == [3]  # only rank 0 saves

    # Two clusters at once resume from that step-3 checkpoint. Per-rank directories (rank 0's a copy
    # of the shared one, rank 1's empty): the ranks would diverge, so both refuse.
    own = [tmp_path / "own" / "LOG0" / "ckpt", tmp_path / "own" / "LOG1" / "ckpt"]
    shutil.copytree(shared, own[0], ignore=shutil.ignore_patterns("compile_cache"))
    # Both ranks from rank 0's checkpoint in the shared directory.
    resumed = _start_cluster(tmp_path / "resumed", synthetic_voc, [shared, shared], "--train-steps", "5", "--resume")
    try:
        refused = _start_cluster(tmp_path / "own", synthetic_voc, own, "--train-steps", "6", "--resume").finish()
        outputs = resumed.finish()
    finally:
        resumed.kill()
    for code, out in outputs:
        assert code == 0, out
        assert "at step 3" in out and [(e, s) for e, s, _ in step_lines(out)] == [(1, 4), (2, 1)], out
    assert [s for s, _ in list_checkpoints(shared)] == [5]
    for code, out in refused:
        assert code == 2, out
        assert "ranks found checkpoints of different steps" in out and "Traceback" not in out, out


# ---------------------------------------------------------------- bad input: one line, exit 2

def test_missing_data_root(tmp_path):
    assert_one_line_error(run_train(tmp_path / "nope", tmp_path / "ckpt"), "--data-root", "nope")


def test_unknown_config_key(synthetic_voc, tmp_path):
    assert_one_line_error(run_train(synthetic_voc, tmp_path / "ckpt", "--set", "learning_rat=0.1"),
                          "learning_rat", "learning_rate")


def test_corrupt_checkpoint_on_resume(synthetic_voc, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    bad = ckpt / checkpoint_name(3)
    bad.write_bytes(os.urandom(4096))
    assert_one_line_error(run_train(synthetic_voc, ckpt, "--resume"), str(bad))


def test_existing_checkpoints_need_resume(synthetic_voc, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / checkpoint_name(3)).write_bytes(b"x")
    assert_one_line_error(run_train(synthetic_voc, ckpt), "--resume")


def test_label_of_the_wrong_size(synthetic_voc, tmp_path):
    data = tmp_path / "VOC2012"
    shutil.copytree(synthetic_voc, data)
    train_ids = (data / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    label_path = data / "SegmentationClass" / f"{train_ids[1]}.png"
    with Image.open(label_path) as label:
        label.resize((label.width // 2, label.height // 2), Image.NEAREST).save(label_path)
    assert_one_line_error(run_train(data, tmp_path / "ckpt"), str(label_path))


def test_mpirun_start_on_cpu_is_refused_not_hung(synthetic_voc, tmp_path):
    # Open MPI alone implies GPU; DEVICE_TARGET=CPU (as the launcher's --platform CPU --mode mpirun sets) asks for CPU.
    env = _env(OMPI_COMM_WORLD_RANK="0", OMPI_COMM_WORLD_SIZE="2", OMPI_COMM_WORLD_LOCAL_RANK="0", DEVICE_TARGET="CPU")
    assert_one_line_error(run_train(synthetic_voc, tmp_path / "ckpt", env=env), "mpirun", "dynamic")
