"""ProcessGroup is an extension point: a new launcher that starts every rank with one command is one class.

The class below is what a Slurm (srun) group needs to be: a script that starts every rank
through a wrapper recording LOG<rank>/exit_status. The base class and the real supervisor
do the rest (each exit reported once, the failing rank named with its log tail, the others
stopped and marked, nothing left behind).
"""
from __future__ import annotations

import sys
from pathlib import Path

from launcher.job.hosts import Host
from launcher.launch import prepare, write_job_files
from launcher.job.spec import Entry, JobSpec
from launcher.run.mpirun import OneCommandGroup
from launcher.run.supervisor import run_attempt
from tests.fixtures.jobs import assert_nothing_left, descendant_pids

PAYLOAD = Path(__file__).resolve().parent / "payloads" / "rank_behaviour.py"
ALL_RANKS = """#!/usr/bin/env bash
# Starts every rank at once, as srun or mpirun would; each wrapper records its rank's exit status.
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 1
for rank in 0 1 2; do
    (bash "LOG$rank/run.sh"; echo $? > "LOG$rank/exit_status.tmp" && mv "LOG$rank/exit_status.tmp" "LOG$rank/exit_status") &
done
wait
"""


class AllRanksGroup(OneCommandGroup):
    script = "all_ranks.sh"
    output = "all_ranks.log"


def test_a_one_command_launcher_is_one_class_and_is_supervised_like_the_others(tmp_path):
    spec = JobSpec(job_id="one-class", job_dir=tmp_path / "job", created="2026-01-01T00:00:00.000Z",
                   hosts=(Host(name="node-a", address="127.0.0.1"),), devices=(0, 1, 2), platform="GPU", mode="mpirun",
                   entry=Entry(script=PAYLOAD), python=sys.executable, bind_cores=False,
                   args=("--fail-rank", "1", "--exit-code", "3", "--sleep", "0.3"))
    plan, files = prepare(spec)
    write_job_files(plan, files)
    (spec.job_dir / AllRanksGroup.script).write_text(ALL_RANKS)
    baseline = descendant_pids()
    group = AllRanksGroup(plan)
    outcome = run_attempt([group], grace=1.0)
    assert outcome.state == "failed"
    failure = outcome.first_failure
    assert (failure.rank, failure.exit_code, failure.host) == (1, 3, "node-a")
    assert failure.log_path == str(spec.job_dir / "LOG1" / "log.txt")
    assert "rank 1 failing with exit code 3" in failure.tail
    by_rank = {exit_.rank: exit_ for exit_ in outcome.exits}
    assert sorted(by_rank) == [0, 1, 2]
    assert all(by_rank[r].stopped_by_launcher and by_rank[r].signal == 15 for r in (0, 2)), by_rank
    assert not by_rank[1].stopped_by_launcher and by_rank[1].duration_s is not None
    assert group.poll() == () and group.close(1.0) == ()  # reported once; closing twice is harmless
    assert_nothing_left(spec.job_dir, baseline)


def test_job_processes_finds_exactly_the_processes_whose_environment_names_the_job(tmp_path):
    """The /proc scan matches VAR=value as one whole environment entry: not a longer value, not another variable."""
    import subprocess
    import sys

    from launcher.run.process_tree import job_processes

    job = str(tmp_path / "job")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    procs = {name: subprocess.Popen(sleeper, env=env) for name, env in {
        "first": {"MARK": job},  # the only entry
        "middle": {"A": "1", "MARK": job, "Z": "2"},
        "longer": {"MARK": job + "-2"},
        "other": {"NOT_MARK": job},
    }.items()}
    try:
        found = {proc.pid for proc in job_processes(job, var="MARK")}
        assert found == {procs["first"].pid, procs["middle"].pid}
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
