"""Kubernetes manifests: every kind renders, validates strictly against its CRD, and --k8s-set works."""
from __future__ import annotations

import pytest
import yaml

from launcher.cluster.k8s_manifests import K8sJob, ManifestError, k8s_name, parse_setting, render_manifests
from launcher.cluster.pod_env import read_pod_place
from tests.fixtures.k8s_schemas import strict

POD_COMMAND = ("launch-train", "--from-env", "--k8s-kind", "KIND", "--platform", "Ascend", "--devices", "8",
               "--job-dir", "/job/run 1", "--", "--config", "tiny_synthetic", "--note", "it's \"quoted\": {x}")


def job(kind="volcano", platform="Ascend", mode="rank-table", **kw):
    command = tuple(kind if w == "KIND" else w for w in POD_COMMAND)
    base = dict(kind=kind, name=k8s_name("20261201-091200-ab12cd"), job_id="20261201-091200-ab12cd",
                image="swr.example.com/deeplab:1.0", worker_pods=2, devices_per_pod=8, platform=platform,
                mode=mode, pod_command=command, env={"HCCL_CONNECT_TIMEOUT": "600"})
    base.update(kw)
    return K8sJob(**base)


CASES = [
    ("volcano", "Ascend", "rank-table"), ("volcano", "CPU", "dynamic"), ("volcano", "GPU", "dynamic"),
    ("msjob", "CPU", "dynamic"), ("msjob", "Ascend", "dynamic"),
    ("ascendjob", "Ascend", "rank-table"), ("ascendjob", "Ascend", "dynamic"),
]


@pytest.mark.parametrize("kind, platform, mode", CASES)
def test_every_manifest_validates_strictly(k8s_validate, kind, platform, mode):
    manifests = render_manifests(job(kind, platform, mode))
    assert manifests, "nothing rendered"
    for manifest in manifests:
        assert yaml.safe_load(manifest.text) == manifest.obj  # the file says exactly what was validated
        assert k8s_validate(manifest.obj) == [], manifest.path


@pytest.mark.parametrize("kind, platform, mode", CASES)
def test_every_pod_runs_the_in_pod_launcher_with_the_exact_words(kind, platform, mode):
    from launcher.cluster.k8s_manifests import pod_templates

    manifests = render_manifests(job(kind, platform, mode))
    obj = manifests[-1].obj
    templates = pod_templates(obj, kind)
    assert templates
    for template in templates:
        container = template["spec"]["containers"][0]
        assert container["command"] == [kind if w == "KIND" else w for w in POD_COMMAND]
        assert container["name"] == {"volcano": "deeplab", "msjob": "mindspore", "ascendjob": "ascend"}[kind]


def test_ascend_rank_table_job_has_its_configmap_mounted(k8s_validate):
    configmap, ascendjob = render_manifests(job("ascendjob"))
    assert configmap.obj["kind"] == "ConfigMap"
    name = configmap.obj["metadata"]["name"]
    assert name == f"rings-config-{ascendjob.obj['metadata']['name']}"
    assert '"status":"initializing"' in configmap.obj["data"]["hccl.json"]
    assert configmap.obj["metadata"]["labels"]["ring-controller.atlas"] == "ascend-910b"
    worker = ascendjob.obj["spec"]["replicaSpecs"]["Worker"]["template"]["spec"]
    assert "Scheduler" not in ascendjob.obj["spec"]["replicaSpecs"]  # a rank-table start has no scheduler
    volume = next(v for v in worker["volumes"] if v.get("configMap"))
    assert volume["configMap"]["name"] == name
    mount = next(m for m in worker["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    env = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert env["RANK_TABLE_FILE"]["value"] == mount["mountPath"] + "/hccl.json"
    assert env["XDL_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    assert worker["containers"][0]["resources"]["limits"] == {"huawei.com/Ascend910": 8}


def test_volcano_pods_get_the_variables_the_in_pod_side_reads():
    obj = render_manifests(job("volcano", "CPU", "dynamic"))[-1].obj
    assert obj["spec"]["plugins"] == {"env": [], "svc": []}
    task = obj["spec"]["tasks"][0]
    # what the svc plugin would set for this job, fed to the in-pod reader
    hosts = ",".join(f"{obj['metadata']['name']}-{task['name']}-{i}.{obj['metadata']['name']}"
                     for i in range(task["replicas"]))
    place = read_pod_place("volcano", {"VC_TASK_INDEX": "0", "VK_TASK_INDEX": "0",
                                       "VC_WORKER_HOSTS": hosts, "VC_WORKER_NUM": str(task["replicas"])},
                           volcano_task=task["name"], sched_port=2222)
    assert place.runs_scheduler and place.pod_count == 2
    assert task["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 2222
    assert {"event": "PodFailed", "action": "AbortJob"} in obj["spec"]["policies"]


def test_settings_reach_the_job_every_pod_and_every_container(k8s_validate):
    settings = ["spec.queue=research", "pod.spec.nodeSelector.accelerator-type=card-910b-2",
                'container.resources.limits.memory=64Gi',
                'metadata.labels["team.example.com/owner"]=vision',
                "pod.spec.volumes[0]={name: job, nfs: {server: 10.0.0.2, path: /jobs}}",
                "spec.runPolicy.backoffLimit=3"]
    manifest = render_manifests(job("ascendjob", mode="dynamic"), settings)[-1]
    obj = manifest.obj
    assert obj["spec"]["queue"] == "research"
    assert obj["metadata"]["labels"]["team.example.com/owner"] == "vision"
    assert obj["spec"]["runPolicy"]["backoffLimit"] == 3
    for replica in obj["spec"]["replicaSpecs"].values():
        spec = replica["template"]["spec"]
        assert spec["nodeSelector"] == {"accelerator-type": "card-910b-2"}
        assert spec["containers"][0]["resources"]["limits"]["memory"] == "64Gi"
        assert spec["volumes"][0] == {"name": "job", "nfs": {"server": "10.0.0.2", "path": "/jobs"}}
    # spec.queue is no AscendJob field: the strict schema says so (a typo would be caught alike)
    errors = k8s_validate(obj)
    assert errors and all("queue" in e for e in errors)


def test_a_mistyped_field_is_rejected_by_the_strict_schema(k8s_validate):
    obj = render_manifests(job("volcano", "CPU", "dynamic"), ["pod.spec.containers[0].imagePullPolicyy=Always"])[-1].obj
    assert any("imagePullPolicyy" in e for e in k8s_validate(obj))
    obj = render_manifests(job("msjob", "CPU", "dynamic"), ["spec.msReplicaSpecs.Worker.replica=3"])[-1].obj
    assert any("replica" in e for e in k8s_validate(obj))


def test_strict_leaves_open_maps_open():
    schema = {"type": "object", "properties": {"a": {"type": "object", "additionalProperties": {"type": "string"}},
                                               "b": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                                                     "properties": {"c": {"type": "string"}}}}}
    made = strict(schema)
    assert made["additionalProperties"] is False
    assert made["properties"]["a"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in made["properties"]["b"]


@pytest.mark.parametrize("text, path, value", [
    ("spec.queue=gpu", ["spec", "queue"], "gpu"),
    ("spec.minAvailable=3", ["spec", "minAvailable"], 3),
    ('metadata.labels["a.b/c"]="007"', ["metadata", "labels", "a.b/c"], "007"),
    ("pod.spec.volumes[1]={name: x}", ["pod", "spec", "volumes", 1], {"name": "x"}),
    ('metadata.annotations["k=v"]=a=b', ["metadata", "annotations", "k=v"], "a=b"),
])
def test_setting_paths(text, path, value):
    assert parse_setting(text) == (path, value)


@pytest.mark.parametrize("bad, message", [
    ("spec.queue", "expected path=value"), ("=x", "expected path=value"),
    ("spec..queue=x", "cannot read the path"), ("spec.tasks[9].name=x", "past the end"),
    ("spec.queue.x=1", "not a mapping"), ("pod=1", "give a path below 'pod'"),
    ("spec.a=[unclosed", "value is not YAML"),
])
def test_bad_settings_name_the_flag(bad, message):
    with pytest.raises(ManifestError, match=message):
        render_manifests(job("volcano", "CPU", "dynamic"), [bad])


@pytest.mark.parametrize("kw, message", [
    (dict(kind="kubeflow"), "--k8s-kind 'kubeflow'"), (dict(namespace="Team_A"), "--namespace 'Team_A'"),
    (dict(image="my image"), "--image"), (dict(mode="mpirun"), "MPI operator"),
    (dict(kind="ascendjob", platform="CPU", mode="dynamic"), "needs --platform Ascend"),
    (dict(platform="GPU", mode="rank-table"), "rank-table: needs --platform Ascend"),
])
def test_bad_requests_name_the_flag(kw, message):
    with pytest.raises(ManifestError, match=message):
        job(**kw)


def test_job_names_are_dns_labels():
    assert k8s_name("20261201-091200-ab12cd") == "dl-20261201-091200-ab12cd"
    assert k8s_name("My_Job.v2") == "dl-my-job-v2"
    assert len(k8s_name("x" * 100)) <= 40
