"""deeplab-train's flags from the environment a launcher gives (pure: no MindSpore is imported).

The contract (launcher/job/rank_env.py): DEVICE_TARGET names the platform, LAUNCH_TRAIN_CKPT_DIR
the job's checkpoint directory, LAUNCH_TRAIN_RESTART_COUNT > 0 means "resume"; a flag given
on the command line always wins.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from deeplab import distributed
from deeplab.distributed import DistributedError
from deeplab.train import UsageError, build_parser, options_from_args


def options(tmp_path, *flags: str, **environ: str):
    args = build_parser().parse_args(["--config", "tiny_synthetic", "--data-root", str(tmp_path), *flags])
    return options_from_args(args, environ)


@pytest.mark.parametrize("environ, target", [
    ({}, "CPU"),
    ({"DEVICE_TARGET": "Ascend"}, "Ascend"),
    ({"DEVICE_TARGET": "gpu"}, "GPU"),
    ({"RANK_TABLE_FILE": "/job/rank_table.json"}, "Ascend"),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "GPU"),
    ({"OMPI_COMM_WORLD_SIZE": "2", "DEVICE_TARGET": "CPU"}, "CPU"),  # DEVICE_TARGET wins over the start mode
    ({"MS_ROLE": "MS_WORKER", "RANK_TABLE_FILE": "/t.json"}, "CPU"),  # the dynamic cluster implies nothing
])
def test_device_target_comes_from_the_environment(tmp_path, environ, target):
    assert distributed.device_target_from_env(environ) == target
    assert options(tmp_path, **environ).device_target == target


def test_an_explicit_device_target_wins(tmp_path):
    assert options(tmp_path, "--device-target", "GPU", DEVICE_TARGET="Ascend").device_target == "GPU"
    assert options(tmp_path, "--device-target", "CPU", RANK_TABLE_FILE="/t.json").device_target == "CPU"


def test_an_unknown_device_target_is_one_clear_error(tmp_path):
    with pytest.raises(DistributedError, match="DEVICE_TARGET='TPU': must be one of CPU, GPU, Ascend"):
        options(tmp_path, DEVICE_TARGET="TPU")


def test_checkpoint_dir_and_resume_follow_the_launcher(tmp_path):
    first = options(tmp_path, LAUNCH_TRAIN_CKPT_DIR="/job/LOG0/ckpt", LAUNCH_TRAIN_RESTART_COUNT="0")
    assert str(first.ckpt_dir) == "/job/LOG0/ckpt" and not first.resume
    restarted = options(tmp_path, LAUNCH_TRAIN_CKPT_DIR="/job/LOG0/ckpt", LAUNCH_TRAIN_RESTART_COUNT="2")
    assert restarted.resume
    mine = options(tmp_path, "--ckpt-dir", "/mine", LAUNCH_TRAIN_CKPT_DIR="/job/LOG0/ckpt")
    assert str(mine.ckpt_dir) == "/mine"
    alone = options(tmp_path)
    assert str(alone.ckpt_dir) == "ckpt" and not alone.resume
    with pytest.raises(UsageError, match="LAUNCH_TRAIN_RESTART_COUNT='x'"):
        options(tmp_path, LAUNCH_TRAIN_RESTART_COUNT="x")


def test_reading_the_launch_environment_does_not_import_mindspore():
    code = ("import sys, deeplab.train as t; a = t.build_parser().parse_args(['--config', 'x', '--data-root', '/']); "
            "t.options_from_args(a, {'DEVICE_TARGET': 'GPU'}); print('mindspore' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"
