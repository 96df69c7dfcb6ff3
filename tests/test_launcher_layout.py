"""The launcher stands alone: no module under launcher/ imports deeplab or MindSpore.

The launcher must start fast and run on hosts that only orchestrate; the training program
is a separate process. What both need (the CPU tuning environment) lives in cpu_env/.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "launcher"
# The dynamic cluster's scheduler is a MindSpore process the launcher starts (never imports).
MINDSPORE_PROCESS = LAUNCHER / "run" / "ms_scheduler.py"


def test_importing_every_launcher_module_and_planning_a_job_loads_neither_deeplab_nor_mindspore(tmp_path):
    code = f"""
import contextlib, io, json, pkgutil, sys, importlib
import launcher
names = sorted(m.name for m in pkgutil.walk_packages(launcher.__path__, "launcher."))
for name in names:
    importlib.import_module(name)
from launcher.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["--platform", "CPU", "--devices", "2", "--job-dir", {str(tmp_path / "job")!r}, "--dry-run", "--json",
                 "--", "--config", "tiny_synthetic"])
print(json.dumps({{"code": code, "modules": names,
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("deeplab", "mindspore"))}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0
    assert {"launcher.cli", "launcher.run.group", "launcher.remote.agent", "launcher.collect.cli"} <= set(report["modules"])
    assert report["loaded"] == []


def test_no_launcher_source_imports_deeplab_or_mindspore():
    offenders = []
    for path in sorted(LAUNCHER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "deeplab" or (top == "mindspore" and path != MINDSPORE_PROCESS):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {name}")
    assert offenders == []
