"""Fixture modules live in tests/fixtures/, one idea each.

The suite runs on two pytest-xdist workers (setup.cfg). Tests that share an expensive
session fixture (the Slurm cluster, the sshd hosts, the trained two-rank job) or module
fixture (a training run whose checkpoint several tests read) are kept on one worker each
(``--dist loadgroup``), so each such fixture is made once per run, not once per worker.
"""
import pytest

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.jobs",
    "tests.fixtures.sshd",
    "tests.fixtures.slurm",
    "tests.fixtures.k8s_schemas",
]

# shared fixture -> the xdist group of every test that uses it (first match wins)
SHARED_FIXTURE_GROUPS = {
    "slurm_cluster": "slurm",
    "sshd_hosts": "sshd",
    "two_rank_cpu_job": "two_rank_cpu_job",
    "pretrained_tiny_run": "deeplab_convert_pretrained_tiny_run",  # tests/test_deeplab_convert.py: one too
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, group in SHARED_FIXTURE_GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
                break
