"""Kubernetes manifests for a job: a Volcano Job, an MSJob or an AscendJob (+ its rank-table ConfigMap).

Pure: ``render_manifests(K8sJob(...))`` renders job_templates/k8s/ (or the user's
``--templates DIR/k8s/``), parses the YAML back (so a template mistake is caught here,
not by the API server), applies the ``--k8s-set path=value`` settings and returns the
manifests as data; writing them is the caller's business.

Every pod runs ``pod_command`` (``launch-train --from-env ...``), which reads what the
operator set and starts this pod's ranks. No Service is rendered: Volcano's svc plugin,
ms-operator and ascend-operator each create the headless Service(s) their pods are
reached through; the one extra object is, for Ascend rank-table jobs, the
``rings-config-<job>`` ConfigMap that ascend-operator fills.

--k8s-set paths
    ``spec.queue=gpu``                     a path from the job object's root
    ``pod.spec.nodeSelector.zone=a``       the same setting in every pod template of the job
    ``container.resources.limits.memory=64Gi``  the training container of every pod template
    ``metadata.labels["team.example/x"]=1``    a key with dots or slashes, quoted in brackets
    ``pod.spec.volumes[0]={name: job, nfs: {server: 10.0.0.2, path: /jobs}}``  list index; the
    value is read as YAML (numbers, booleans, flow mappings), "quoted" for a literal string.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import jinja2
import yaml

from launcher.cluster.pod_env import OPERATORS
from launcher.job.safe_text import visible

KINDS = OPERATORS  # volcano | msjob | ascendjob
TEMPLATE_OF = {"volcano": "k8s/volcano.yaml.j2", "msjob": "k8s/msjob.yaml.j2", "ascendjob": "k8s/ascendjob.yaml.j2"}
RINGS_CONFIG_TEMPLATE = "k8s/rings-config.yaml.j2"
API_VERSION_OF = {"volcano": "batch.volcano.sh/v1alpha1", "msjob": "mindspore.gitee.com/v1",
                  "ascendjob": "mindxdl.gitee.com/v1"}
KIND_OF = {"volcano": "Job", "msjob": "MSJob", "ascendjob": "AscendJob"}
DEVICE_RESOURCE = {"GPU": "nvidia.com/gpu", "Ascend": "huawei.com/Ascend910"}
RANK_TABLE_MOUNT = "/user/serverid/devindex/config"  # where ascend-operator's pods expect hccl.json
DEFAULT_SCHED_PORT = 2222  # the port ms-operator and ascend-operator default to
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Pod names are "<job>-<task>-<index>" (Volcano) or "<job>-worker-<index>": keep them within 63.
MAX_NAME = 40


class ManifestError(ValueError):
    """A request or --k8s-set that cannot make a valid manifest; one line naming the flag."""


@dataclass(frozen=True)
class K8sJob:
    """What the manifests need; ``pod_command`` is what every pod runs (no shell in between)."""

    kind: str
    name: str
    job_id: str
    image: str
    worker_pods: int
    devices_per_pod: int
    platform: str
    mode: str
    pod_command: tuple[str, ...]
    namespace: str = "default"
    sched_port: int = DEFAULT_SCHED_PORT
    job_mount: str = "/job"
    env: Mapping[str, str] = field(default_factory=dict)
    queue: str = "default"
    max_restarts: int = 0
    ring_controller_label: str = "ascend-910b"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ManifestError(f"--k8s-kind {self.kind!r}: use one of {', '.join(KINDS)}")
        for flag, value in (("job name", self.name), ("--namespace", self.namespace)):
            if not _DNS_LABEL.match(value) or len(value) > 63:
                raise ManifestError(f"{flag} {value!r}: must be a DNS label (a-z, 0-9, '-', at most 63)")
        if len(self.name) > MAX_NAME:
            raise ManifestError(f"job name {self.name!r}: at most {MAX_NAME} characters (pod names add to it)")
        if not self.image or any(c.isspace() for c in self.image):
            raise ManifestError(f"--image {self.image!r}: give an image reference such as registry/deeplab:1.0")
        if self.worker_pods < 1 or self.devices_per_pod < 1:
            raise ManifestError(f"{self.worker_pods} pods x {self.devices_per_pod} devices: both must be >= 1")
        if self.mode not in ("dynamic", "rank-table"):
            raise ManifestError(f"--mode {self.mode}: on Kubernetes use dynamic or rank-table "
                                "(mpirun needs an MPI operator, which these kinds are not)")
        if self.mode == "rank-table" and self.platform != "Ascend":
            raise ManifestError("--mode rank-table: needs --platform Ascend (HCCL rank tables are Ascend's)")
        if self.kind == "ascendjob" and self.platform != "Ascend":
            raise ManifestError(f"--k8s-kind ascendjob: needs --platform Ascend, not {self.platform}")
        if not 0 < self.sched_port < 65536:
            raise ManifestError(f"--sched-port {self.sched_port}: not in 1..65535")
        if not self.pod_command:
            raise ManifestError("pod command: empty")
        object.__setattr__(self, "pod_command", tuple(str(w) for w in self.pod_command))

    @property
    def rank_table(self) -> bool:
        return self.mode == "rank-table"

    @property
    def rank_table_configmap(self) -> str:
        return f"rings-config-{self.name}"

    @property
    def rank_table_mount(self) -> str:
        return RANK_TABLE_MOUNT

    @property
    def ring_controller(self) -> Optional[str]:
        return self.ring_controller_label if self.platform == "Ascend" else None

    @property
    def device_resource(self) -> Optional[str]:
        return DEVICE_RESOURCE.get(self.platform)


@dataclass(frozen=True)
class Manifest:
    """One file of <job-dir>/k8s/: path relative to the job dir, the object, its YAML text."""

    path: str
    obj: Mapping[str, Any]
    text: str


def k8s_name(job_id: str) -> str:
    """A DNS-label job name from a launch-train job id: 20261201-091200-ab12cd -> dl-20261201-091200-ab12cd."""
    name = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    return ("dl-" + name)[:MAX_NAME].rstrip("-")


# What a YAML reader takes literally inside a double-quoted scalar. JSON leaves the rest raw, but
# YAML folds its own line breaks (NEL, U+2028, U+2029) into spaces and refuses DEL, C1 controls
# and non-characters: each is written as an escape instead, so the pod gets the value exactly.
_YAML_LITERAL = re.compile("[\x09\x0a\x0d\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def yaml_scalar(value: object) -> str:
    """Jinja2 filter: a double-quoted YAML scalar (JSON strings are valid YAML), whatever the value holds."""
    quoted = json.dumps(str(value), ensure_ascii=False)
    return "".join(c if _YAML_LITERAL.fullmatch(c) else f"\\u{ord(c):04x}" for c in quoted)


def render_manifests(job: K8sJob, settings: Sequence[str] = (), templates_dir: Optional[Path] = None,
                     env: Optional[jinja2.Environment] = None) -> tuple[Manifest, ...]:
    """Every manifest of the job, in the order kubectl should apply them (ConfigMap first)."""
    env = env or manifest_environment(templates_dir)
    out = []
    if job.rank_table:
        out.append(_manifest(env, RINGS_CONFIG_TEMPLATE, job, f"k8s/0-{job.rank_table_configmap}.yaml", ()))
    out.append(_manifest(env, TEMPLATE_OF[job.kind], job, f"k8s/1-{job.kind}-{job.name}.yaml", settings))
    return tuple(out)


def manifest_environment(templates_dir: Optional[Path] = None) -> jinja2.Environment:
    from launcher.job.render import template_environment

    # Not a shell: every value goes through yq (a JSON string, control characters escaped),
    # and the pod template is a multi-line macro result piped through indent.
    env = template_environment(templates_dir, shell=False)
    env.filters["yq"] = yaml_scalar
    return env


def _manifest(env: jinja2.Environment, template: str, job: K8sJob, path: str,
              settings: Sequence[str]) -> Manifest:
    try:
        text = env.get_template(template).render(k8s=job)
    except jinja2.TemplateNotFound:
        raise ManifestError(f"template {template}: not found in --templates or the built-in job_templates") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ManifestError(f"template {exc.filename or template} line {exc.lineno}: {exc.message}") from None
    except jinja2.UndefinedError as exc:
        raise ManifestError(f"template {template}: {exc.message}") from None
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"template {template}: rendered text is not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(obj, dict) or "kind" not in obj:
        raise ManifestError(f"template {template}: rendered no Kubernetes object")
    for setting in settings:
        apply_setting(obj, setting, job.kind)
    header = "".join(line + "\n" for line in _leading_comments(text))
    return Manifest(path=path, obj=obj, text=header + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120))


class _Dumper(yaml.SafeDumper):
    """safe_dump, with multi-line strings (the ConfigMap's hccl.json) as readable | blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value and not any(c.isspace() and c not in " \n" for c in value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _leading_comments(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            lines.append(line)
        elif line.strip():
            break
    return lines


# ---------------------------------------------------------------------------- --k8s-set

# Far deeper than any Kubernetes object; bounded so that dumping the manifest cannot recurse out.
MAX_SETTING_DEPTH = 64
_SEGMENT = re.compile(r'\.?([A-Za-z0-9_-]+)|\[(\d+)\]|\["([^"]+)"\]')
Path_ = list[Union[str, int]]


def parse_setting(text: str) -> tuple[Path_, Any]:
    """``path=value`` -> ([keys / indexes], value read as YAML)."""
    path_text, sep, value_text = text, "", ""
    # a "=" inside ["..."] belongs to the key: find the first "=" outside brackets
    depth = 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "=" and depth == 0:
            path_text, sep, value_text = text[:i], "=", text[i + 1:]
            break
    if not sep or not path_text:
        raise ManifestError(f"--k8s-set {visible(text, 120)!r}: expected path=value, e.g. spec.queue=gpu")
    path: Path_ = []
    pos = 0
    while pos < len(path_text):
        match = _SEGMENT.match(path_text, pos)
        if not match or (pos == 0 and path_text.startswith(".")):
            raise ManifestError(f"--k8s-set {visible(text, 120)!r}: cannot read the path at {path_text[pos:]!r}")
        name, index, quoted = match.groups()
        if index is not None and len(index) > 6:
            raise ManifestError(f"--k8s-set {visible(text, 120)!r}: list index [{index[:20]}] is too large")
        path.append(int(index) if index is not None else (quoted if quoted is not None else name))
        pos = match.end()
        if len(path) > MAX_SETTING_DEPTH:
            raise ManifestError(f"--k8s-set {visible(text, 120)!r}: a path of more than {MAX_SETTING_DEPTH} parts")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as exc:
        raise ManifestError(f"--k8s-set {visible(text, 120)!r}: value is not YAML "
                            f"({visible(str(exc).splitlines()[0], 120)})") from None
    except RecursionError:
        raise _too_deep(text) from None
    if _depth(value) + len(path) > MAX_SETTING_DEPTH:
        raise _too_deep(text)
    return path, value


def _too_deep(text: str) -> ManifestError:
    return ManifestError(f"--k8s-set {visible(text, 120)!r}: nested more than {MAX_SETTING_DEPTH} levels deep")


def _depth(value: Any) -> int:
    """How deeply value nests (iteratively: a hostile value may be deeper than Python's recursion)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        node, level = pending.pop()
        deepest = max(deepest, level)
        if level > MAX_SETTING_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        pending.extend((child, level + 1) for child in children)
    return deepest


def pod_templates(obj: Mapping[str, Any], kind: str, text: str = "") -> list[dict]:
    """Every pod template of a rendered job object; ManifestError when an earlier --k8s-set changed its shape."""
    spec = obj.get("spec")
    where = {"volcano": "spec.tasks", "msjob": "spec.msReplicaSpecs"}.get(kind, "spec.replicaSpecs")
    if kind == "volcano":
        groups = spec.get("tasks") if isinstance(spec, dict) else None
        groups = groups if isinstance(groups, list) else None
    else:
        replicas = spec.get(where.split(".")[1]) if isinstance(spec, dict) else None
        groups = list(replicas.values()) if isinstance(replicas, dict) else None
    templates = [group.get("template") for group in groups or [] if isinstance(group, dict)]
    if not groups or len(templates) != len(groups) or not all(isinstance(t, dict) for t in templates):
        raise ManifestError(f"--k8s-set {visible(text, 120)!r}: leaves the job's {where} without its pod "
                            "templates")
    return templates


def _container(template: dict, text: str) -> dict:
    spec = template.get("spec")
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        raise ManifestError(f"--k8s-set {visible(text, 120)!r}: leaves a pod template without its training "
                            "container (spec.containers[0])")
    return containers[0]


def apply_setting(obj: dict, text: str, kind: str) -> None:
    """Apply one --k8s-set to the job object in place; ManifestError naming the setting when it cannot."""
    path, value = parse_setting(text)
    head = path[0]
    if head == "pod":
        targets = [(template, path[1:]) for template in pod_templates(obj, kind, text)]
    elif head == "container":
        targets = [(_container(template, text), path[1:]) for template in pod_templates(obj, kind, text)]
    else:
        targets = [(obj, path)]
    for target, rest in targets:
        if not rest:
            raise ManifestError(f"--k8s-set {visible(text, 120)!r}: give a path below {head!r}")
        _set(target, rest, value, text)
    # The job must keep its pods' shape: for the settings after this one, and for the operator.
    for template in pod_templates(obj, kind, text):
        _container(template, text)


def _set(node: Any, path: Path_, value: Any, text: str) -> None:
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if isinstance(key, int):
            if not isinstance(node, list):
                raise ManifestError(f"--k8s-set {visible(text, 120)!r}: [{key}] indexes something that is not a list")
            if key > len(node):
                raise ManifestError(f"--k8s-set {visible(text, 120)!r}: [{key}] is past the end of a list "
                                    f"of {len(node)}")
            if key == len(node):
                node.append({} if not last else None)
            if last:
                node[key] = value
            else:
                if node[key] is None:
                    node[key] = [] if isinstance(path[i + 1], int) else {}
                node = node[key]
        else:
            if not isinstance(node, dict):
                raise ManifestError(f"--k8s-set {visible(text, 120)!r}: {key!r} is below something that is "
                                    "not a mapping")
            if last:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = [] if isinstance(path[i + 1], int) else {}
                node = node[key]
