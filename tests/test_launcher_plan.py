"""The plan as a pure function: ranks, environments, cores, rank-table numbering, restarts."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hccl import rank_table
from launcher.job.hosts import Host, parse_hosts_arg
from launcher.job.options import LaunchOptions
from launcher.job.resolve import local_hosts
from launcher.errors import LaunchError
from launcher.job.plan import plan_job, plan_restart, split_cores
from launcher.job.rank_env import JOB_MARKER_VAR
from launcher.job.spec import Entry, JobSpec

JOB_DIR = Path("/jobs/j1")
AVX512 = frozenset({"avx2", "avx512f"})


def host(name: str = "node0", address: str = "127.0.0.1", cpus=(0, 1, 2, 3), local=True) -> Host:
    return Host(name=name, address=address, local=local, cpus=tuple(cpus), cpu_flags=AVX512)


def spec(**changes) -> JobSpec:
    base = dict(
        job_id="j1",
        job_dir=JOB_DIR,
        created="2026-01-01T00:00:00Z",
        hosts=(host(),),
        devices=(0, 1),
        platform="CPU",
        mode="dynamic",
        entry=Entry(module="deeplab.train"),
        python="/venv/bin/python",
        args=("--config", "tiny_synthetic"),
        sched_port=8118,
    )
    base.update(changes)
    return JobSpec(**base)


def test_dynamic_cpu_ranks_get_the_scheduler_worker_environment_and_cpu_tuning():
    plan = plan_job(spec(env={"GLOG_v": "3", "OMP_NUM_THREADS": "7"}))
    assert [r.rank for r in plan.ranks] == [0, 1]
    r1 = plan.ranks[1]
    assert r1.log_dir == "LOG1" and r1.local_index == 1 and r1.device_id == 1
    assert r1.command == ("/venv/bin/python", "-m", "deeplab.train", "--config", "tiny_synthetic")
    env = r1.env
    assert {k: env[k] for k in ("MS_ROLE", "MS_SCHED_HOST", "MS_SCHED_PORT", "MS_WORKER_NUM", "MS_NODE_ID")} == {
        "MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": "8118",
        "MS_WORKER_NUM": "2", "MS_NODE_ID": "1",
    }
    assert (env["RANK_ID"], env["RANK_SIZE"], env["DEVICE_ID"]) == ("1", "2", "1")
    assert env[JOB_MARKER_VAR] == str(JOB_DIR)
    # 4 cores, 2 ranks: two cores each, and the thread counts follow; --env wins.
    assert r1.cpus == (2, 3)
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["OPENBLAS_NUM_THREADS"] == "2"
    assert env["OMP_NUM_THREADS"] == "7" and env["GLOG_v"] == "3"
    sched = plan.scheduler
    assert sched is not None and sched.env["MS_ROLE"] == "MS_SCHED" and sched.port == 8118
    assert sched.command == ("/venv/bin/python", "-m", "launcher.run.ms_scheduler")


def test_no_bind_cores_leaves_ranks_unbound_but_splits_threads():
    plan = plan_job(spec(bind_cores=False))
    assert all(r.cpus is None for r in plan.ranks)
    assert plan.ranks[0].env["OMP_NUM_THREADS"] == "2"


def test_gpu_ranks_see_the_chosen_devices_and_pick_by_local_index():
    plan = plan_job(spec(platform="GPU", mode="mpirun", devices=(2, 3), sched_port=None))
    assert plan.scheduler is None
    assert [r.device_id for r in plan.ranks] == [2, 3]
    assert plan.ranks[1].env["CUDA_VISIBLE_DEVICES"] == "2,3" and plan.ranks[1].env["DEVICE_ID"] == "1"
    assert "ONEDNN_MAX_CPU_ISA" not in plan.ranks[0].env


def test_rank_table_mode_takes_rank_ids_from_the_table():
    table = rank_table.build("127.0.0.1", {4: "10.0.0.5", 5: "10.0.0.6"}, devices=[5, 4])
    plan = plan_job(
        spec(platform="Ascend", mode="rank-table", devices=(4, 5), sched_port=None,
             rank_table=table, rank_table_json=rank_table.dumps(table))
    )
    by_device = {r.device_id: r for r in plan.ranks}
    assert by_device[5].rank == 0 and by_device[4].rank == 1
    assert by_device[4].env["RANK_TABLE_FILE"] == str(JOB_DIR / "rank_table.json")
    assert by_device[4].env["SERVER_ID"] == "0" and by_device[4].env["DEVICE_ID"] == "4"


def test_rank_table_that_does_not_match_the_devices_is_refused():
    table = rank_table.build("127.0.0.1", {0: "10.0.0.1", 1: "10.0.0.2"}, devices=[0, 1])
    with pytest.raises(ValueError, match="lists devices"):
        plan_job(spec(platform="Ascend", mode="rank-table", devices=(0, 1, 2, 3), sched_port=None,
                      rank_table=table, rank_table_json=rank_table.dumps(table)))


def test_two_hosts_are_host_major_and_the_scheduler_is_on_the_first():
    hosts = (host("a", "10.0.0.1", local=False), host("b", "10.0.0.2", local=False))
    plan = plan_job(spec(hosts=hosts))
    assert [(r.host, r.local_index, r.rank) for r in plan.ranks] == [("a", 0, 0), ("a", 1, 1), ("b", 0, 2), ("b", 1, 3)]
    assert all(r.env["MS_SCHED_HOST"] == "10.0.0.1" and r.env["MS_WORKER_NUM"] == "4" for r in plan.ranks)
    assert [h.slots for h in plan.hosts] == [2, 2]


@pytest.mark.parametrize("platform, mode", [("CPU", "dynamic"), ("GPU", "mpirun"), ("Ascend", "rank-table")])
def test_every_rank_is_told_its_platform_attempt_and_the_jobs_checkpoint_dir(platform, mode):
    changes = {"platform": platform, "mode": mode, "max_restarts": 3}
    if mode != "dynamic":
        changes["sched_port"] = None
    if mode == "rank-table":
        table = rank_table.build("127.0.0.1", {0: "10.0.0.1", 1: "10.0.0.2"}, devices=[0, 1])
        changes.update(rank_table=table, rank_table_json=rank_table.dumps(table))
    plan = plan_job(spec(**changes))
    for rank in plan.ranks:
        assert rank.env["DEVICE_TARGET"] == platform
        assert rank.env["LAUNCH_TRAIN_RESTART_COUNT"] == "0" and rank.env["LAUNCH_TRAIN_MAX_RESTARTS"] == "3"
        # One directory for every rank: rank 1 resumes from the checkpoints rank 0 wrote.
        assert rank.env["LAUNCH_TRAIN_CKPT_DIR"] == str(JOB_DIR / "LOG0" / "ckpt")


def test_a_restart_changes_only_the_attempt_never_the_programs_arguments():
    plan = plan_job(spec(max_restarts=2))
    again = plan_restart(plan_restart(plan))
    assert again.attempt == 2
    for before, after in zip(plan.ranks, again.ranks):
        assert after.command == before.command  # no --resume, no --ckpt-dir: the program resumes by itself
        assert after.env["LAUNCH_TRAIN_RESTART_COUNT"] == "2"
        assert {k: v for k, v in after.env.items() if k != "LAUNCH_TRAIN_RESTART_COUNT"} == \
            {k: v for k, v in before.env.items() if k != "LAUNCH_TRAIN_RESTART_COUNT"}
    script = plan_job(spec(entry=Entry(script=Path("/x/train.py"))))
    assert plan_restart(script).ranks[0].command == script.ranks[0].command
    assert plan_restart(script).ranks[0].env["LAUNCH_TRAIN_RESTART_COUNT"] == "1"


def test_spec_validation_names_the_problem():
    with pytest.raises(ValueError, match="--max-restarts"):
        spec(max_restarts=-1)
    with pytest.raises(ValueError, match="scheduler port"):
        spec(sched_port=None)
    with pytest.raises(ValueError, match="--tee 5"):
        spec(tee=frozenset({5}))
    with pytest.raises(ValueError, match="--env"):
        spec(env={"BAD-NAME": "1"})
    with pytest.raises(ValueError, match="distinct"):
        spec(devices=(1, 1))
    with pytest.raises(ValueError, match="host name"):
        Host(name="a;rm -rf /", address="127.0.0.1")


def test_one_host_parser_tells_this_machine_from_remote_hosts():
    mine = {"localhost", "127.0.0.1", "vm"}
    entries = parse_hosts_arg("localhost,root@gpu-node-7:2222,10.0.0.9", names_of_this_machine=mine)
    assert [(e.name, e.label, e.local) for e in entries] == [
        ("localhost", "localhost", True), ("gpu-node-7:2222", "root@gpu-node-7:2222", False), ("10.0.0.9", "10.0.0.9", False)]
    assert entries[0].local_host() == Host(name="localhost", address="127.0.0.1", local=True)
    with pytest.raises(ValueError, match="'localhost' and '127.0.0.1' are both this machine"):
        parse_hosts_arg("localhost,127.0.0.1", names_of_this_machine=mine)
    # The library call alone plans this machine; remote hosts come resolved (pre-flight) as hosts=.
    with pytest.raises(LaunchError, match="--hosts gpu-node-7: not this machine"):
        local_hosts(LaunchOptions(hosts="gpu-node-7"))


@given(cores=st.integers(1, 64), ranks=st.integers(1, 80))
@settings(max_examples=200, deadline=None)
def test_split_cores_gives_every_rank_cores_and_never_shares_when_there_are_enough(cores, ranks):
    cpus = list(range(100, 100 + cores))
    shares = split_cores(cpus, ranks)
    assert len(shares) == ranks and all(shares)
    flat = [c for share in shares for c in share]
    assert set(flat) <= set(cpus)
    if ranks <= cores:
        assert len(flat) == len(set(flat)) == cores  # disjoint, and every core used
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


@given(n_hosts=st.integers(1, 4), n_devices=st.integers(1, 8))
@settings(max_examples=50, deadline=None)
def test_plans_number_ranks_densely_and_give_each_its_own_log_dir(n_hosts, n_devices):
    hosts = tuple(host(f"h{i}", f"10.0.0.{i + 1}", local=False) for i in range(n_hosts))
    plan = plan_job(spec(hosts=hosts, devices=tuple(range(n_devices))))
    assert [r.rank for r in plan.ranks] == list(range(n_hosts * n_devices))
    assert len({r.log_dir for r in plan.ranks}) == len(plan.ranks)
    assert len({(r.host, r.device_id) for r in plan.ranks}) == len(plan.ranks)
    assert {r.env["MS_NODE_ID"] for r in plan.ranks} == {str(i) for i in range(len(plan.ranks))}


@given(n_hosts=st.integers(1, 3), n_devices=st.integers(1, 3),
       value=st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12),
       hang=st.none() | st.dictionaries(st.text(max_size=4), st.lists(st.integers() | st.text(max_size=4), max_size=2)))
@settings(max_examples=40, deadline=None)
def test_job_json_text_is_the_documents_indented_json_whatever_it_holds(n_hosts, n_devices, value, hang):
    # The plan's part is encoded once and reused: the text must stay json.dumps(document, indent=2).
    import json

    from launcher.job.job_json import JobStatus, job_document, job_json_text
    from launcher.run.failures import RankExit

    hosts = tuple(host(f"h{i}", f"10.0.0.{i + 1}", local=False) for i in range(n_hosts))
    plan = plan_job(spec(hosts=hosts, devices=tuple(range(n_devices)), env={"V": value}, args=("--x", value)))
    for status in (JobStatus(), JobStatus(state="failed", started=value, hang=hang, attempts=({"cause": value},),
                                          rank_exits=(RankExit(rank=0, host="h0", exit_code=3, duration_s=0.5),))):
        assert job_json_text(plan, status) == json.dumps(job_document(plan, status), indent=2) + "\n"
