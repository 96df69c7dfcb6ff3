"""deeplab-info: JSON description of a config's model, and one-line errors."""
import json
import os
import subprocess
import sys

INFO = [sys.executable, "-m", "deeplab.info"]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def run_info(*args):
    return subprocess.run([*INFO, *args], capture_output=True, text=True, env=CHILD_ENV, timeout=120)


def test_info_reports_size_and_shapes_of_the_tiny_model():
    result = run_info("--config", "tiny_synthetic", "--crop", "65", "--set", "seg_num_classes=4")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["backbone"] == "tiny" and info["output_stride"] == 8
    assert info["output_shape"] == [1, 4, 65, 65]
    assert info["feature_shape"] == [1, 128, 9, 9]
    assert 0 < info["params"] < info["params_with_bn_statistics"]


def test_info_bad_input_is_one_line_exit_2():
    for args, word in ((["--config", "no_such_preset"], "no_such_preset"),
                       (["--config", "tiny_synthetic", "--set", "output_strid=8"], "output_stride"),
                       (["--config", "tiny_synthetic", "--crop", "0"], "--crop")):
        result = run_info(*args)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], result.stderr
