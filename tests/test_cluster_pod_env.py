"""In-pod side: each operator's variables -> this pod's place and ranks; the mounted rank table wait."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from hccl import rank_table
from launcher.cluster.pod_env import PodEnvError, detect_operator, read_pod_place, volcano_env_key
from launcher.cluster.pod_ranks import pod_ranks
from launcher.cluster.rank_table_wait import RankTableWaitError, wait_for_rank_table

# What each operator puts into a pod (second worker pod of a 2-pod job), as their docs and code say.
VOLCANO = {"VC_TASK_INDEX": "1", "VK_TASK_INDEX": "1",
           "VC_WORKER_HOSTS": "j1-worker-0.j1,j1-worker-1.j1", "VC_WORKER_NUM": "2"}
MSJOB_WORKER = {"MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "j1-scheduler-0", "MS_SCHED_PORT": "2222",
                "MS_WORKER_NUM": "2", "MS_NODE_ID": "1"}
MSJOB_SCHED = {**MSJOB_WORKER, "MS_ROLE": "MS_SCHED"}
ASCEND_WORKER = {"MS_ROLE": "MS_WORKER", "MS_SCHED_HOST": "10.0.0.5", "MS_SCHED_PORT": "2222",
                 "MS_NODE_RANK": "1", "MS_WORKER_NUM": "16", "MS_LOCAL_WORKER": "8",
                 "ASCEND_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7", "XDL_IP": "192.168.0.12",
                 "RANK_TABLE_FILE": "/user/serverid/devindex/config/hccl.json"}


@pytest.mark.parametrize("env, kind", [(VOLCANO, "volcano"), (MSJOB_WORKER, "msjob"),
                                       (ASCEND_WORKER, "ascendjob"), ({"PATH": "/bin"}, None)])
def test_operator_is_recognised_by_its_variables(env, kind):
    assert detect_operator(env) == kind


def test_volcano_second_pod_of_two():
    place = read_pod_place("volcano", VOLCANO, sched_port=2222)
    assert (place.pod_index, place.pod_count, place.runs_scheduler) == (1, 2, False)
    assert place.sched_host == "j1-worker-0.j1" and place.sched_port == 2222
    assert [(r.rank, r.device_id) for r in pod_ranks(place, place.ranks_per_pod(2))] == [(2, 0), (3, 1)]
    first = read_pod_place("volcano", {**VOLCANO, "VC_TASK_INDEX": "0", "VK_TASK_INDEX": "0"}, sched_port=2222)
    assert first.runs_scheduler and [r.rank for r in pod_ranks(first, 2)] == [0, 1]


def test_volcano_task_names_become_variable_names_as_the_svc_plugin_forms_them():
    assert volcano_env_key("ms-worker") == "MS_WORKER"
    env = {"VK_TASK_INDEX": "0", "VC_MS_WORKER_HOSTS": "a.j", "VC_MS_WORKER_NUM": "1"}
    assert read_pod_place("volcano", env, volcano_task="ms-worker").hosts == ("a.j",)


@pytest.mark.parametrize("env, message", [
    ({**VOLCANO, "VK_TASK_INDEX": "0"}, "Volcano sets them equal"),
    ({k: v for k, v in VOLCANO.items() if k != "VC_WORKER_HOSTS"}, "VC_WORKER_HOSTS: not set"),
    ({**VOLCANO, "VC_WORKER_NUM": "3"}, "VC_WORKER_NUM=3: VC_WORKER_HOSTS lists 2 hosts"),
    ({**VOLCANO, "VC_TASK_INDEX": "2", "VK_TASK_INDEX": "2"}, "the task has 2 pods"),
    ({**VOLCANO, "VC_TASK_INDEX": "x", "VK_TASK_INDEX": "x"}, "VC_TASK_INDEX='x'"),
])
def test_volcano_problems_name_the_variable(env, message):
    with pytest.raises(PodEnvError, match=message):
        read_pod_place("volcano", env)


def test_msjob_worker_and_scheduler_pods():
    worker = read_pod_place("msjob", MSJOB_WORKER)
    assert (worker.pod_index, worker.pod_count, worker.scheduler_only) == (1, 2, False)
    assert (worker.sched_host, worker.sched_port) == ("j1-scheduler-0", 2222)
    # ms-operator runs one worker a pod; --devices 4 gives each pod 4 consecutive ranks
    per_pod = worker.ranks_per_pod(4)
    assert worker.rank_size(per_pod) == 8
    assert [r.rank for r in pod_ranks(worker, per_pod)] == [4, 5, 6, 7]
    sched = read_pod_place("msjob", MSJOB_SCHED)
    assert sched.scheduler_only and pod_ranks(sched, 1) == ()


@pytest.mark.parametrize("env, message", [
    ({**MSJOB_WORKER, "MS_ROLE": "MS_PSERVER"}, "MS_ROLE='MS_PSERVER': expected MS_SCHED or MS_WORKER"),
    ({**MSJOB_WORKER, "MS_NODE_ID": "2"}, "MS_NODE_ID=2: MS_WORKER_NUM=2"),
    ({**MSJOB_WORKER, "MS_SCHED_PORT": "http"}, "MS_SCHED_PORT='http'"),
    ({k: v for k, v in MSJOB_WORKER.items() if k != "MS_SCHED_HOST"}, "MS_SCHED_HOST: not set"),
])
def test_msjob_problems_name_the_variable(env, message):
    with pytest.raises(PodEnvError, match=message):
        read_pod_place("msjob", env)


def test_msjob_port_must_agree_with_the_manifests():
    with pytest.raises(PodEnvError, match="MS_SCHED_PORT=2222: the manifests gave the scheduler port 3333"):
        read_pod_place("msjob", MSJOB_WORKER, sched_port=3333)


def test_ascendjob_worker_pod_without_a_table():
    env = {k: v for k, v in ASCEND_WORKER.items() if k != "RANK_TABLE_FILE"}
    place = read_pod_place("ascendjob", env)
    assert (place.pod_index, place.pod_count, place.local_workers) == (1, 2, 8)
    per_pod = place.ranks_per_pod(None)
    assert per_pod == 8 and place.rank_size(per_pod) == 16
    assert [r.rank for r in pod_ranks(place, per_pod)] == list(range(8, 16))
    with pytest.raises(PodEnvError, match="--devices 4: MS_LOCAL_WORKER=8"):
        place.ranks_per_pod(4)


@pytest.mark.parametrize("env, message", [
    ({**ASCEND_WORKER, "MS_WORKER_NUM": "12"}, "MS_WORKER_NUM=12: not a multiple of MS_LOCAL_WORKER=8"),
    ({**ASCEND_WORKER, "ASCEND_VISIBLE_DEVICES": "0,1"}, "2 devices for MS_LOCAL_WORKER=8"),
    ({**ASCEND_WORKER, "ASCEND_VISIBLE_DEVICES": "0,0,1,2,3,4,5,6"}, "listed twice"),
    ({**ASCEND_WORKER, "MS_NODE_RANK": "2"}, "MS_NODE_RANK=2: the job has 2 worker pods"),
])
def test_ascendjob_problems_name_the_variable(env, message):
    with pytest.raises(PodEnvError, match=message):
        read_pod_place("ascendjob", env)


def test_ascend_device_plugin_names_and_ranges():
    env = {**ASCEND_WORKER, "ASCEND_VISIBLE_DEVICES": "Ascend910-4,Ascend910-5,6-7,0,1,2,3"}
    assert read_pod_place("ascendjob", env).visible_devices == (4, 5, 6, 7, 0, 1, 2, 3)


def _two_server_table():
    ips = {d: f"192.168.100.{101 + d}" for d in range(8)}
    tables = [rank_table.build("192.168.0.11", ips), rank_table.build("192.168.0.12",
                                                                       {d: f"192.168.101.{101 + d}" for d in range(8)})]
    return rank_table.merge(tables)


def test_rank_table_picks_the_server_of_this_node_by_xdl_ip():
    place = read_pod_place("ascendjob", ASCEND_WORKER)
    ranks = pod_ranks(place, 8, _two_server_table())
    assert [r.rank for r in ranks] == list(range(8, 16)) and [r.device_id for r in ranks] == list(range(8))
    # without XDL_IP: the pod index picks the server in table order
    no_ip = read_pod_place("ascendjob", {**ASCEND_WORKER, "XDL_IP": "", "MS_NODE_RANK": "0"})
    assert [r.rank for r in pod_ranks(no_ip, 8, _two_server_table())] == list(range(8))
    with pytest.raises(PodEnvError, match="server 192.168.0.12 has 8 devices; this pod runs 4"):
        pod_ranks(place, 4, _two_server_table())


def _write_atomically(path, text):
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)  # what the kubelet's symlink swap amounts to for a reader


def test_rank_table_turns_from_initializing_to_completed_while_waiting(tmp_path):
    path = tmp_path / "hccl.json"
    path.write_text('{\n    "status":"initializing"\n}\n')
    table = _two_server_table()
    seen = []

    def operator_fills_it_in():
        time.sleep(0.3)
        path.write_text('{"version": "1.0", "server_')  # a reader may catch a half-written file
        time.sleep(0.2)
        _write_atomically(path, rank_table.dumps(table))

    writer = threading.Thread(target=operator_fills_it_in)
    started = time.monotonic()
    writer.start()
    try:
        got = wait_for_rank_table(path, timeout_s=20, poll_s=0.02, on_wait=seen.append)
    finally:
        writer.join()
    assert time.monotonic() - started >= 0.3
    assert got.rank_size == 16 and got.server_count == 2 and got.status == "completed"
    assert seen[0] == '"status": "initializing"'
    assert any("not complete JSON" in why for why in seen)


def test_rank_table_wait_times_out_with_a_clear_error(tmp_path):
    path = tmp_path / "hccl.json"
    path.write_text(json.dumps({"status": "initializing"}))
    with pytest.raises(RankTableWaitError, match=r"still waiting after 0.2 s \(\"status\": \"initializing\"\)"):
        wait_for_rank_table(path, timeout_s=0.2, poll_s=0.05)


def test_a_completed_but_invalid_table_names_the_file(tmp_path):
    path = tmp_path / "hccl.json"
    bad = json.loads(rank_table.dumps(_two_server_table()))
    bad["server_list"][0]["device"][0]["device_ip"] = "999.1.1.1"
    path.write_text(json.dumps(bad))
    with pytest.raises(RankTableWaitError, match=f"RANK_TABLE_FILE {path}: .*999.1.1.1"):
        wait_for_rank_table(path, timeout_s=1, poll_s=0.05)


def test_an_unknown_status_is_not_waited_for(tmp_path):
    path = tmp_path / "hccl.json"
    path.write_text('{"status": "failed"}')
    with pytest.raises(RankTableWaitError, match="'failed'"):
        wait_for_rank_table(path, timeout_s=5, poll_s=0.05)
