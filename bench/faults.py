"""The fault matrix of issue 10 as JSON: every case in tests/faults/, passed or not, and how fast hangs were found.

    python bench/faults.py [-k EXPR] [--out FILE]

Runs `pytest tests/faults` (real programs, real sshd hosts, a real 2-rank MindSpore job
for the hang case) and reads its JUnit XML. Each case is one row: its file, name,
outcome and seconds. A hang case records, through pytest's `record_property`,
`detect_s` (from the moment a rank froze to the launcher's verdict) and `timeout_s`
(the --hang-timeout it ran with): they are listed under "hangs". The machine's load
average is printed before and after, since every figure here is a wall-clock time on a
shared 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_matrix(select: str | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="faults-bench-") as tmp:
        report = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "faults"),
                   f"--junitxml={report}", "-o", "junit_family=xunit1"]
        if select:
            command += ["-k", select]
        load_before = os.getloadavg()
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        wall = time.monotonic() - started
        load_after = os.getloadavg()
        if not report.exists():
            raise SystemExit(f"faults bench: pytest wrote no report (exit {done.returncode}):\n{done.stdout[-2000:]}")
        tree = ET.parse(report)
    cases, hangs = [], []
    for case in tree.iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
        name = case.get("name", "")
        module = case.get("classname", "").rsplit(".", 1)[-1]
        row = {"file": module, "case": name, "outcome": outcome, "seconds": round(float(case.get("time") or 0), 3)}
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if "detect_s" in props:
            hang = {"case": name, "detect_s": float(props["detect_s"]), "timeout_s": float(props.get("timeout_s", "nan"))}
            hangs.append(hang)
            row["detect_s"] = hang["detect_s"]
        cases.append(row)
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    return {
        "bench": "faults",
        "pytest_exit": done.returncode,
        "cases": len(cases),
        **counts,
        "wall_s": round(wall, 2),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "hangs": hangs,
        "matrix": cases,
    }


def main() -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", dest="select", help="pytest -k expression (a part of the matrix)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    result = run_matrix(args.select)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["failed"] == 0 and result["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
