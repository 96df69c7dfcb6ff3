"""Fixture modules live in tests/fixtures/, one idea each."""
pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.jobs",
    "tests.fixtures.sshd",
    "tests.fixtures.slurm",
    "tests.fixtures.k8s_schemas",
]
