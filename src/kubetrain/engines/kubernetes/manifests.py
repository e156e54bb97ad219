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
* **Named volumes are PersistentVolumeClaims** of the same name.
* **Outputs (and so checkpoints, under the output folder) always go to the results claim**
  (``subPath: <experiment>/<job>`` or ``<job>``), made on first use (``results.py``): an emptyDir
  would lose them with the pod, and the master could not show them.
* **``/dev/shm``** is a memory ``emptyDir`` sized to the memory limit: the runtime's
  64 MB default kills PyTorch DataLoader workers.
* **One init container** (any image with ``python3``) fetches, with the job's own token, the in-job
  SDK (``/kubetrain/sdk``, put first on ``PYTHONPATH``) and the code snapshot if there is one: so
  the training image needs no kubetrain installed, servers need no shared disk, and no registry
  push is needed per change.  Only when ``masterUrl`` is set: without it pods cannot reach the master.
* **Kueue mode** (``kueueQueue``): the Job carries ``kueue.x-k8s.io/queue-name`` and is created
  suspended; Kueue unsuspends it when its LocalQueue admits it (the Job integration's contract).
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
from kubetrain.core.errors import SpecError
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
SDK_DIR = "/kubetrain/sdk"
INIT_CONTAINER = "kubetrain-init"
#: Kueue's Job integration: the LocalQueue a Job is submitted to (``pkg/controller/constants`` in Kueue).
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
#: The access modes a PersistentVolumeClaim may ask for (``ReadOnlyMany`` cannot take outputs).
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")

#: Run by the init container (with the job's image): fetch the in-job SDK, then the job's snapshot if it
#: has one, each unpacked safely (``filter="data"``: no links out, no devices, no absolute paths).
FETCH = """\
import os, tarfile, urllib.request
def fetch(url, into):
    request = urllib.request.Request(url, headers={"X-Kubetrain-Job-Token": os.environ["KUBETRAIN_JOB_TOKEN"]})
    with urllib.request.urlopen(request, timeout=300) as response:
        with tarfile.open(fileobj=response, mode="r|gz") as archive:  # streamed: memory stays flat
            archive.extractall(into, filter="data")
if os.environ.get("KUBETRAIN_SDK_URL"):
    fetch(os.environ["KUBETRAIN_SDK_URL"], os.environ["KUBETRAIN_SDK_DIR"])
if os.environ.get("KUBETRAIN_SNAPSHOT_URL"):
    fetch(os.environ["KUBETRAIN_SNAPSHOT_URL"], os.environ["KUBETRAIN_CODE_DIR"])
"""
#: The script's former name (tests/integration/test_files.py runs it for the snapshot alone).
FETCH_SNAPSHOT = FETCH


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
    #: The PersistentVolumeClaim every job's outputs and checkpoints go to (``<claim>/[<experiment>/]<job>/``);
    #: made on first use with the three settings below, or a claim of that name made by hand, used as it is.
    results_claim: str = "kubetrain-results"
    #: ReadWriteOnce works on every storage class (jobs then share the node the claim is attached to);
    #: ReadWriteMany (NFS, CephFS, EFS, Filestore...) lets jobs on several nodes write at once.
    results_access_mode: str = "ReadWriteOnce"
    results_storage_class: str | None = None
    results_size: str = "20Gi"
    #: Where the results claim is mounted in the master's own pod (``kubetrain k8s manifests``): outputs
    #: are read from there.  None: the master is outside the cluster and reads through a helper pod.
    results_mount_path: str | None = None
    #: A Kueue LocalQueue: Jobs are created suspended with its label, and Kueue admits them.  None: no Kueue.
    kueue_queue: str | None = None
    #: None: Kubernetes' own default (Always for ``:latest``, IfNotPresent otherwise).
    image_pull_policy: str | None = None
    service_account: str | None = None
    #: Extra tolerations, as Kubernetes writes them (e.g. for GPU node taints).
    tolerations: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: priority -> priorityClassName, for clusters that define classes; the highest threshold met wins.
    priority_classes: tuple[tuple[int, str], ...] = ()
    #: For ``kubetrain volume create``: size when none is given, storage class (None: the cluster's
    #: default) and access mode (ReadWriteOnce: the only one every storage class provides; ReadWriteMany
    #: where jobs on several nodes must mount one volume at once and the storage class offers it).
    volume_size: str = "10Gi"
    storage_class: str | None = None
    volume_access_mode: str = "ReadWriteOnce"


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
#: On the results claim this master made (``render_results_claim``).
RESULTS_LABEL = "kubetrain.io/results"


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
    volumes.append({"name": "output", "persistentVolumeClaim": {"claimName": settings.results_claim}})
    mounts.append({"name": "output", "mountPath": OUTPUT_DIR, "subPath": output_subpath(order.job, spec)})

    variables = job_variables(order, spec, attempt_dir=ATTEMPT_DIR, output_dir=OUTPUT_DIR,
                              master_url=settings.master_url, gpus=None, volumes=volume_env)
    del variables["KUBETRAIN_JOB_TOKEN"]  # from the attempt's Secret instead (render_secret)
    from_index: list[dict[str, Any]] = []
    if body.replicas > 1:  # each replica's rendezvous variables; its index from its own pod (gang.py)
        constants, from_index = gang_variables(body, name)
        for entry in from_index:
            variables.pop(entry["name"], None)
        variables.update(constants)
    if settings.master_url:  # the init container puts the SDK here: first, so that it matches this master
        variables["PYTHONPATH"] = ":".join(p for p in (SDK_DIR, body.env.get("PYTHONPATH")) if p)
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
    # enableServiceLinks off: a job's environment is its spec's, not <SERVICE>_PORT=tcp://... for every Service
    # of the namespace (a Service called "kubetrain" would set KUBETRAIN_PORT, which our SDK reads).
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "volumes": volumes,
                           "enableServiceLinks": False}
    if order.run_as is not None:  # the submitter's uid, as on the embedded engine; never escalating
        pod["securityContext"] = {"runAsUser": order.run_as.uid, "runAsGroup": order.run_as.gid,
                                  "runAsNonRoot": order.run_as.uid != 0}
        container["securityContext"] = {"allowPrivilegeEscalation": False}
    if body.snapshot:
        volumes.append({"name": "code", "emptyDir": {}})
        mounts.append({"name": "code", "mountPath": CODE_DIR})
        container["workingDir"] = f"{CODE_DIR}/{body.working_dir}" if body.working_dir else CODE_DIR
    elif body.working_dir:
        container["workingDir"] = body.working_dir
    if settings.master_url:
        volumes.append({"name": "sdk", "emptyDir": {}})
        mounts.append({"name": "sdk", "mountPath": SDK_DIR, "readOnly": True})
        pod["initContainers"] = [_init_container(order, container["image"], settings, snapshot=bool(body.snapshot))]
    node_selector, affinity = _placement(body.selector)
    if node_selector:
        pod["nodeSelector"] = node_selector
    if affinity:
        pod["affinity"] = affinity
    if settings.tolerations:
        pod["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.service_account:
        pod["serviceAccountName"] = settings.service_account
    else:  # a job's code is untrusted: no credential for the cluster's API unless one is configured for it
        pod["automountServiceAccountToken"] = False
    priority_class = _priority_class(settings, body.priority)
    if priority_class:
        pod["priorityClassName"] = priority_class

    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {"metadata": {"labels": own_labels}, "spec": pod},
    }
    job_labels = dict(own_labels)
    if settings.kueue_queue:  # Kueue admits the suspended Job, then unsuspends it (its Job integration)
        job_labels[KUEUE_QUEUE_LABEL] = settings.kueue_queue
        job_spec["suspend"] = True
    if body.replicas > 1:
        make_indexed(job_spec, pod, body.replicas, name)
    if body.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = body.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": job_labels,
                     "annotations": {"kubetrain.io/spec-name": order.job}},
        "spec": job_spec,
    }


def _init_container(order: LaunchOrder, image: str, settings: KubernetesSettings, *, snapshot: bool) -> dict[str, Any]:
    """Fetches the SDK (and the snapshot, if any) with the job's image, so any image with ``python3`` works."""
    base = f"{(settings.master_url or '').rstrip('/')}/api/v1/jobs/{order.job}"
    env = [{"name": "KUBETRAIN_SDK_URL", "value": f"{base}/sdk"}, {"name": "KUBETRAIN_SDK_DIR", "value": SDK_DIR},
           _token_from_secret(order)]
    mounts = [{"name": "sdk", "mountPath": SDK_DIR}]
    if snapshot:
        env += [{"name": "KUBETRAIN_SNAPSHOT_URL", "value": f"{base}/snapshot"},
                {"name": "KUBETRAIN_CODE_DIR", "value": CODE_DIR}]
        mounts.append({"name": "code", "mountPath": CODE_DIR})
    return {
        "name": INIT_CONTAINER,
        "image": image,
        **({"imagePullPolicy": settings.image_pull_policy} if settings.image_pull_policy else {}),
        "command": ["python3", "-c", FETCH],
        "env": env,
        # requests = limits, like the job's container: the pod stays in the Guaranteed QoS class.
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
        "volumeMounts": mounts,
    }


def output_subpath(job: str, spec: JobSpec) -> str:
    """Where a job's outputs live on the results claim: ``<experiment>/<job>`` for a trial, else ``<job>``."""
    group = spec.metadata.labels.get("kubetrain.io/experiment") or job
    return job if group == job else f"{group}/{job}"


def render_results_claim(settings: KubernetesSettings) -> dict[str, Any]:
    """The results claim, as made on first use; labelled as ours, so only a claim we made is ever deleted."""
    spec: dict[str, Any] = {"accessModes": [settings.results_access_mode],
                            "resources": {"requests": {"storage": settings.results_size}}}
    if settings.results_storage_class:
        spec["storageClassName"] = settings.results_storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": settings.results_claim, "namespace": settings.namespace,
                     "labels": {MASTER_LABEL: settings.master_id, RESULTS_LABEL: "true"}},
        "spec": spec,
    }


def check_results_access(settings: KubernetesSettings, spec: JobSpec, *, schedulable_nodes: int) -> None:
    """Refuse a job that could never start because of how the results claim may be mounted.

    Every job mounts the results claim.  ``ReadWriteOnce`` attaches it to one node at a time, and any
    number of pods on that node may use it: so on a one-node cluster (kind, k3s on a workstation) a
    gang runs, and it is allowed.  With several nodes a gang is there to span them, and its pods on a
    second node would wait forever (``Multi-Attach error``): refused, with the fix.  ``ReadWriteOncePod``
    admits one pod in the whole cluster, so no gang at all.  Jobs of one pod are always allowed: on
    several nodes, one placed away from the claim waits (``FailedAttachVolume``) until the node holding
    it has no job left, then runs; ``ReadWriteMany`` is how an admin avoids that wait.
    """
    replicas = spec.spec.replicas
    mode = settings.results_access_mode
    if replicas <= 1 or mode == "ReadWriteMany" or (mode == "ReadWriteOnce" and schedulable_nodes <= 1):
        return
    raise SpecError(f"spec.replicas: {replicas} replicas all mount the results claim {settings.results_claim!r}, "
                    f"which is {mode} (one {'pod' if mode == 'ReadWriteOncePod' else 'node'} at a time), so replicas "
                    f"on a second node could never start; set kubernetes.resultsAccessMode: ReadWriteMany (with a "
                    f"storage class that offers it, kubernetes.resultsStorageClass) or run one replica",
                    details={"field": "spec.replicas", "value": replicas})
