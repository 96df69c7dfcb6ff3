"""The docs cannot drift from the tools: every flag of every command's --help is documented, and
every flag the docs' launch-train table names exists; the README stays an entry page."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCS = "\n".join(path.read_text() for path in sorted((REPO / "docs").glob("*.md")))
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")


def help_flags(*command: str) -> set[str]:
    # Wide enough that argparse never wraps a line inside a flag's name.
    env = {**os.environ, "COLUMNS": "1000"}
    done = subprocess.run([str(BIN / command[0]), *command[1:], "--help"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr
    return set(FLAG.findall(done.stdout)) - {"--help"}


@pytest.mark.parametrize("command", [("launch-train",), ("collect-results",), ("gen-rank-table",),
                                     ("gen-rank-table", "merge"), ("gen-rank-table", "check")])
def test_every_flag_in_help_is_documented(command):
    missing = sorted(flag for flag in help_flags(*command) if not re.search(re.escape(flag) + r"(?![\w-])", DOCS))
    assert not missing, f"{' '.join(command)} --help lists flags docs/ does not mention: {missing}"


def test_the_launch_train_flag_table_names_only_real_flags():
    text = (REPO / "docs" / "launching.md").read_text()
    rows = [line.split("|")[1] for line in text.splitlines() if line.startswith("| `--")]
    assert len(rows) > 15
    named = {flag for row in rows for flag in FLAG.findall(row)}
    assert named <= help_flags("launch-train"), sorted(named - help_flags("launch-train"))


def test_readme_is_an_entry_page_whose_links_exist():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    links = re.findall(r"\]\(([^)#]+)\)", readme)
    assert {"docs/launching.md", "docs/clusters.md", "docs/training.md", "docs/rank-tables.md",
            "docs/collect-results.md", "docs/benchmarks.md", "docs/troubleshooting.md"} <= set(links)
    for link in links:
        assert (REPO / link).is_file(), link
