"""Render one attempt as a ``batch/v1`` Job: pure data in, a manifest out.

No Kubernetes client here and no IO, so every rule is a plain unit test and every
manifest can be checked against the API server's own schema (kubernetes-validate)
for several Kubernetes versions.  The choices, and why:

* **One Job per attempt, ``backoffLimit: 0``, ``restartPolicy: Never``**: our retry
  policy decides about retries (it tells infrastructure from code failures); a
  Kubernetes retry would hide an attempt from the record.
* **requests = limits** for CPU, memory and ``nvidia.com/gpu``: the planner admitted
  the job for exactly that much, and the kernel enforces it (Guaranteed QoS).
* **The selector** becomes ``nodeSelector`` for plain equalities and a required node
  affinity for ``in``/``notin``/``exists``/``!key`` (same semantics as our planner).
* **Named volumes are PersistentVolumeClaims** of the same name; outputs go to the
  results claim (``subPath: <job>``) when one is configured.
* **``/dev/shm``** is a memory ``emptyDir`` sized to the memory limit: the runtime's
  64 MB default kills PyTorch DataLoader workers.
* **The code snapshot** is fetched from the master by an init container with the
  job's own token, so servers need no shared disk and no registry push per change.
* **The job token** (metrics, the snapshot download) sits in a Secret per attempt,
  referenced by the pod, never in the Job object itself.
* **Labels** ``kubetrain.io/job``, ``kubetrain.io/attempt`` and ``kubetrain.io/master``
  let a restarted master find its own objects.
* **A job of N replicas** is an Indexed Job of N pods plus a headless Service (``gang.py`` says why);
  a job of one renders exactly as before.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

from kubetrain.core.attempts import LaunchOrder
from kubetrain.core.quantities import format_cpu
from kubetrain.core.selectors import parse_selector
from kubetrain.core.specs import JobSpec
from kubetrain.engines.kubernetes.gang import (
    JOB_NAME_LABEL,
    gang_variables,
    make_indexed,
    rendezvous_port,
    service_of,
)
from kubetrain.engines.variables import job_variables

JOB_LABEL = "kubetrain.io/job"
ATTEMPT_LABEL = "kubetrain.io/attempt"
MASTER_LABEL = "kubetrain.io/master"
GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER = "job"
CODE_DIR = "/kubetrain/code"
OUTPUT_DIR = "/kubetrain/output"
ATTEMPT_DIR = "/kubetrain/attempt"

#: Run by the init container (with the job's image): fetch the job's snapshot, unpack it safely.
FETCH_SNAPSHOT = """\
import os, tarfile, urllib.request
request = urllib.request.Request(os.environ["KUBETRAIN_SNAPSHOT_URL"],
                                 headers={"X-Kubetrain-Job-Token": os.environ["KUBETRAIN_JOB_TOKEN"]})
with urllib.request.urlopen(request, timeout=300) as response:
    with tarfile.open(fileobj=response, mode="r|gz") as archive:  # streamed: memory stays flat
        archive.extractall(os.environ["KUBETRAIN_CODE_DIR"], filter="data")
"""


@dataclass(frozen=True)
class KubernetesSettings:
    """How this master uses its cluster (``kubernetes:`` in ``config.yaml``)."""

    namespace: str = "default"
    #: The image for jobs that name none (``spec.image`` wins).
    image: str = "python:3.11-slim"
    #: The master's URL as pods reach it (SDK reports, snapshot downloads); None: no reporting.
    master_url: str | None = None
    #: Identifies this master's objects among others in the namespace.
    master_id: str = "kubetrain"
    #: A PersistentVolumeClaim for outputs (``<claim>/<job>/``); None: an emptyDir, lost with the pod.
    results_claim: str | None = None
    #: None: Kubernetes' own default (Always for ``:latest``, IfNotPresent otherwise).
    image_pull_policy: str | None = None
    service_account: str | None = None
    #: Extra tolerations, as Kubernetes writes them (e.g. for GPU node taints).
    tolerations: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: priority -> priorityClassName, for clusters that define classes; the highest threshold met wins.
    priority_classes: tuple[tuple[int, str], ...] = ()
    #: For ``kubetrain volume create``: size when none is given, storage class (None: the cluster's
    #: default) and access mode (shared volumes are read by jobs on many nodes: ReadWriteMany).
    volume_size: str = "10Gi"
    storage_class: str | None = None
    volume_access_mode: str = "ReadWriteMany"


def object_name(job: str, number: int) -> str:
    """The Job's name: ``<job>-<n>`` when that is a valid DNS label, else shortened with a hash."""
    name = f"{job}-{number}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{job[: 63 - len(str(number)) - 10]}-{digest}-{number}"


def secret_name(job: str, number: int) -> str:
    """The Secret that holds an attempt's job token (a name may be longer than a label: 253 characters)."""
    return secret_of(object_name(job, number))


def secret_of(job_object: str) -> str:
    """The token Secret's name for an attempt's Job object name."""
    return f"{job_object}-token"


def render_secret(order: LaunchOrder, settings: KubernetesSettings) -> dict[str, Any]:
    """The attempt's job token, kept out of the Job object: who may read Jobs need not read Secrets."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": secret_name(order.job, order.number), "namespace": settings.namespace,
                     "labels": labels(settings, order.job, order.number)},
        "data": {"token": base64.b64encode(order.token.encode()).decode(),
                 # Values of the job's secretEnv, resolved by the master: in this Secret, never in the Job.
                 **{f"env-{name}": base64.b64encode(value.encode()).decode()
                    for name, value in sorted(order.secret_env.items())}},
    }


def render_service(order: LaunchOrder, spec: JobSpec, settings: KubernetesSettings) -> dict[str, Any]:
    """A gang's headless Service: cluster DNS names each replica's pod ``<job>-<index>.<service>`` through it."""
    name = object_name(order.job, order.number)
    port = rendezvous_port(spec.spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_of(name), "namespace": settings.namespace,
                     "labels": labels(settings, order.job, order.number)},
        "spec": {"clusterIP": "None", "selector": {JOB_NAME_LABEL: name},
                 # DNS records from the start: the rendezvous must not wait for pods to be Ready.
                 "publishNotReadyAddresses": True,
                 "ports": [{"name": "rendezvous", "port": port, "targetPort": port, "protocol": "TCP"}]},
    }


def _secret_env(order: LaunchOrder) -> list[dict[str, Any]]:
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name(order.job, order.number),
                                                          "key": f"env-{name}"}}}
            for name in sorted(order.secret_env)]


def _token_from_secret(order: LaunchOrder) -> dict[str, Any]:
    return {"name": "KUBETRAIN_JOB_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": secret_name(order.job, order.number), "key": "token"}}}


def labels(settings: KubernetesSettings, job: str, number: int) -> dict[str, str]:
    return {JOB_LABEL: job, ATTEMPT_LABEL: str(number), MASTER_LABEL: settings.master_id}


def selector_for(settings: KubernetesSettings) -> str:
    """The label selector of every object this master made."""
    return f"{MASTER_LABEL}={settings.master_id}"


def _placement(selector: str) -> tuple[dict[str, str], dict[str, Any] | None]:
    node_selector: dict[str, str] = {}
    expressions = []
    for requirement in parse_selector(selector):
        if requirement.operator == "In" and len(requirement.values) == 1 and requirement.key not in node_selector:
            node_selector[requirement.key] = requirement.values[0]
            continue
        expression: dict[str, Any] = {"key": requirement.key, "operator": requirement.operator}
        if requirement.operator in ("In", "NotIn"):
            expression["values"] = list(requirement.values)
        expressions.append(expression)
    affinity = None
    if expressions:
        affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": expressions}]}}}
    return node_selector, affinity


def _priority_class(settings: KubernetesSettings, priority: int) -> str | None:
    chosen = None
    for threshold, name in sorted(settings.priority_classes):
        if priority >= threshold:
            chosen = name
    return chosen


VOLUME_LABEL = "kubetrain.io/volume"


def render_claim(name: str, size_bytes: int | None, settings: KubernetesSettings) -> dict[str, Any]:
    """The PersistentVolumeClaim behind ``kubetrain volume create NAME`` (labelled: only ours are ever deleted)."""
    spec: dict[str, Any] = {
        "accessModes": [settings.volume_access_mode],
        "resources": {"requests": {"storage": str(size_bytes) if size_bytes else settings.volume_size}},
    }
    if settings.storage_class:
        spec["storageClassName"] = settings.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": settings.namespace,
                     "labels": {MASTER_LABEL: settings.master_id, VOLUME_LABEL: name}},
        "spec": spec,
    }


def render_job(order: LaunchOrder, spec: JobSpec, settings: KubernetesSettings) -> dict[str, Any]:
    """The ``batch/v1`` Job manifest for one attempt."""
    body = spec.spec
    name = object_name(order.job, order.number)
    own_labels = labels(settings, order.job, order.number)
    memory = str(body.resources.memory_bytes)
    limits = {"cpu": format_cpu(body.resources.cpu_millis), "memory": memory}
    if body.resources.gpu:
        limits[GPU_RESOURCE] = str(body.resources.gpu)

    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": memory}},
                                     {"name": "attempt", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "dshm", "mountPath": "/dev/shm"},
                                    {"name": "attempt", "mountPath": ATTEMPT_DIR}]
    volume_env: dict[str, str] = {}
    for index, volume in enumerate(body.volumes):
        volumes.append({"name": f"vol-{index}", "persistentVolumeClaim": {"claimName": volume.name}})
        mount: dict[str, Any] = {"name": f"vol-{index}", "mountPath": volume.mount_path, "readOnly": volume.read_only}
        if volume.sub_path:
            mount["subPath"] = volume.sub_path
        mounts.append(mount)
        volume_env["KUBETRAIN_VOLUME_" + volume.name.upper().replace("-", "_")] = volume.mount_path
    if settings.results_claim:
        volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": settings.results_claim}})
        group = spec.metadata.labels.get("kubetrain.io/experiment") or order.job
        sub_path = order.job if group == order.job else f"{group}/{order.job}"
        mounts.append({"name": "output", "mountPath": OUTPUT_DIR, "subPath": sub_path})
    else:
        volumes.append({"name": "output", "emptyDir": {}})
        mounts.append({"name": "output", "mountPath": OUTPUT_DIR})

    variables = job_variables(order, spec, attempt_dir=ATTEMPT_DIR, output_dir=OUTPUT_DIR,
                              master_url=settings.master_url, gpus=None, volumes=volume_env)
    del variables["KUBETRAIN_JOB_TOKEN"]  # from the attempt's Secret instead (render_secret)
    from_index: list[dict[str, Any]] = []
    if body.replicas > 1:  # each replica's rendezvous variables; its index from its own pod (gang.py)
        constants, from_index = gang_variables(body, name)
        for entry in from_index:
            variables.pop(entry["name"], None)
        variables.update(constants)
    argv = ["/bin/sh", "-c", " ".join(body.argv)] if body.shell else body.argv
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": body.image or settings.image,
        "command": argv[:1],
        "args": argv[1:],
        "env": [{"name": k, "value": v} for k, v in sorted(variables.items())] + from_index
        + [_token_from_secret(order)] + _secret_env(order),
        "resources": {"requests": dict(limits), "limits": limits},
        "volumeMounts": mounts,
    }
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "volumes": volumes}
    if order.run_as is not None:  # the submitter's uid, as on the embedded engine; never escalating
        pod["securityContext"] = {"runAsUser": order.run_as.uid, "runAsGroup": order.run_as.gid,
                                  "runAsNonRoot": order.run_as.uid != 0}
        container["securityContext"] = {"allowPrivilegeEscalation": False}
    if body.snapshot:
        volumes.append({"name": "code", "emptyDir": {}})
        code_mount = {"name": "code", "mountPath": CODE_DIR}
        mounts.append(code_mount)
        container["workingDir"] = f"{CODE_DIR}/{body.working_dir}" if body.working_dir else CODE_DIR
        pod["initContainers"] = [{
            "name": "fetch-code",
            "image": container["image"],
            **({"imagePullPolicy": settings.image_pull_policy} if settings.image_pull_policy else {}),
            "command": ["python3", "-c", FETCH_SNAPSHOT],
            "env": [
                {"name": "KUBETRAIN_SNAPSHOT_URL", "value": f"{(settings.master_url or '').rstrip('/')}/api/v1/jobs/{order.job}/snapshot"},
                _token_from_secret(order),
                {"name": "KUBETRAIN_CODE_DIR", "value": CODE_DIR},
            ],
            # requests = limits, like the job's container: the pod stays in the Guaranteed QoS class.
            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
            "volumeMounts": [code_mount],
        }]
    elif body.working_dir:
        container["workingDir"] = body.working_dir
    node_selector, affinity = _placement(body.selector)
    if node_selector:
        pod["nodeSelector"] = node_selector
    if affinity:
        pod["affinity"] = affinity
    if settings.tolerations:
        pod["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    priority_class = _priority_class(settings, body.priority)
    if priority_class:
        pod["priorityClassName"] = priority_class

    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": own_labels}, "spec": pod},
    }
    if body.replicas > 1:
        make_indexed(job_spec, pod, body.replicas, name)
    if body.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = body.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": own_labels,
                     "annotations": {"kubetrain.io/spec-name": order.job}},
        "spec": job_spec,
    }
