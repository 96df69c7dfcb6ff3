"""deeplab.cpu_tuning: the environment that keeps oneDNN on its JIT kernels."""
import subprocess
import sys

import pytest

from deeplab import cpu_tuning

CPUINFO_AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\nprocessor\t: 1\n"
CPUINFO_AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"


def test_parse_cpu_flags_reads_the_flags_line():
    assert cpu_tuning.parse_cpu_flags(CPUINFO_AVX512) >= {"avx512f", "avx2"}
    assert cpu_tuning.parse_cpu_flags("processor: 0\n") == frozenset()


def test_avx512_cpu_gets_isa_capped_to_avx2():
    flags = cpu_tuning.parse_cpu_flags(CPUINFO_AVX512)
    assert cpu_tuning.tuned_cpu_env(cpu_flags=flags) == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_avx2_cpu_needs_no_isa_cap():
    flags = cpu_tuning.parse_cpu_flags(CPUINFO_AVX2)
    assert "ONEDNN_MAX_CPU_ISA" not in cpu_tuning.tuned_cpu_env(cpu_flags=flags)


def test_threads_set_every_thread_variable():
    env = cpu_tuning.tuned_cpu_env(threads=3, cpu_flags=[])
    assert env["OMP_NUM_THREADS"] == "3"
    assert set(cpu_tuning.THREAD_ENV_VARS) <= set(env)
    with pytest.raises(ValueError):
        cpu_tuning.tuned_cpu_env(threads=0, cpu_flags=[])


def test_user_values_are_not_overridden():
    environ = {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "OMP_NUM_THREADS": "7"}
    added = cpu_tuning.apply_to_environ(threads=2, environ=environ)
    assert environ["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE"
    assert environ["OMP_NUM_THREADS"] == "7"
    assert "OMP_NUM_THREADS" not in added and added["OPENBLAS_NUM_THREADS"] == "2"


def test_resolve_threads_splits_cores_over_ranks():
    cores = cpu_tuning.available_cores()
    assert cpu_tuning.resolve_threads(5) == 5
    assert cpu_tuning.resolve_threads(0) == cores
    assert cpu_tuning.resolve_threads(None, ranks_on_host=cores * 2) == 1
    with pytest.raises(ValueError):
        cpu_tuning.resolve_threads(-1)


def test_importing_cpu_tuning_does_not_import_mindspore():
    code = "import sys, deeplab.cpu_tuning; print('mindspore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
