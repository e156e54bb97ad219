"""The Kubernetes engine: one ``batch/v1`` Job per attempt; the cluster runs, the master decides and records.

The master stays the single place to submit and watch: it admits jobs with its
own planner against the cluster's node view (what fits where, label selectors,
reasons for waiting), then hands each attempt to Kubernetes as a Job that the
kube-scheduler binds.  Everything the engine needs to find its objects again is
in their labels, so a restarted master re-attaches by listing, not by memory.

Logs are streamed into the master's attempt folder while a pod runs and made
whole when it ends (see ``logs.py``); only then is its Job deleted (one pass
after the end was recorded), so logs outlive pods, which plain Kubernetes does not give.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubetrain.core.attempts import ActiveAttempt, LaunchOrder
from kubetrain.core.errors import ConfigError, EngineError, NotFoundError, SpecError
from kubetrain.core.planning import NodeCapacity
from kubetrain.core.quantities import QuantityError, parse_cpu, parse_memory
from kubetrain.core.records import NodeRecord
from kubetrain.core.specs import JobSpec
from kubetrain.engines.base import Engine, Observation
from kubetrain.engines.kubernetes.manifests import (
    ATTEMPT_LABEL,
    GPU_RESOURCE,
    JOB_LABEL,
    MASTER_LABEL,
    KubernetesSettings,
    object_name,
    render_claim,
    render_job,
    render_secret,
    selector_for,
)
from kubetrain.engines.kubernetes.logs import LogKeeper
from kubetrain.engines.kubernetes.status import interpret, newest
from kubetrain.settings import Settings

log = logging.getLogger("kubetrain.kubernetes")


def _kubernetes():
    try:
        import kubernetes
    except ImportError:  # pragma: no cover - depends on the install
        raise EngineError("the Kubernetes engine needs the kubernetes package: pip install 'kubetrain[kubernetes]'") from None
    return kubernetes


def connect(kubeconfig: str | None = None, context: str | None = None):
    """An ApiClient from a kubeconfig (``KUBECONFIG`` or ``~/.kube/config``), or in-cluster when run in a pod."""
    kubernetes = _kubernetes()
    try:
        if kubeconfig or os.environ.get("KUBECONFIG") or Path("~/.kube/config").expanduser().exists():
            return kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)
        kubernetes.config.load_incluster_config()
    except (kubernetes.config.ConfigException, OSError, ValueError) as exc:
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config, or the in-cluster service account"
        raise ConfigError(f"engine kubernetes: cannot load cluster credentials from {where}: {exc}; "
                          "set KUBECONFIG or kubernetes.kubeconfig in config.yaml") from None
    return kubernetes.client.ApiClient()


CONFIG_FIELDS = {"namespace", "image", "masterUrl", "masterId", "resultsClaim", "imagePullPolicy",
                 "serviceAccount", "tolerations", "priorityClasses", "kubeconfig", "context",
                 "volumeSize", "storageClass", "volumeAccessMode"}
ENV = {"namespace": "KUBETRAIN_K8S_NAMESPACE", "image": "KUBETRAIN_K8S_IMAGE",
       "masterUrl": "KUBETRAIN_K8S_MASTER_URL", "resultsClaim": "KUBETRAIN_K8S_RESULTS_CLAIM"}


def kubernetes_settings(settings: Settings, env: Mapping[str, str], *, master_url: str | None) -> KubernetesSettings:
    """``kubernetes:`` from config.yaml, then ``KUBETRAIN_K8S_*`` variables; unknown keys are errors."""
    raw = dict(settings.kubernetes)
    unknown = set(raw) - CONFIG_FIELDS
    if unknown:
        raise ConfigError(f"config.yaml kubernetes: unknown field(s) {sorted(unknown)}; known: {sorted(CONFIG_FIELDS)}")
    for key, variable in ENV.items():
        if env.get(variable):
            raw[key] = env[variable]
    classes = raw.get("priorityClasses") or {}
    tolerations = raw.get("tolerations") or []
    if not isinstance(classes, dict) or not all(isinstance(v, int) for v in classes.values()):
        raise ConfigError("config.yaml kubernetes.priorityClasses: map each PriorityClass name to the lowest "
                          "job priority that gets it, e.g. {high: 100, normal: 0}")
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        raise ConfigError("config.yaml kubernetes.tolerations: a list of tolerations as Kubernetes writes them")
    # Distinct per database, so two masters sharing a namespace never touch each other's Jobs.
    default_id = "kt-" + hashlib.sha256(settings.database_url.encode()).hexdigest()[:12]
    return KubernetesSettings(
        namespace=str(raw.get("namespace") or "default"),
        image=str(raw.get("image") or KubernetesSettings.image),
        master_url=str(raw.get("masterUrl") or master_url or "") or None,
        master_id=str(raw.get("masterId") or default_id),
        results_claim=raw.get("resultsClaim") or None,
        image_pull_policy=str(raw.get("imagePullPolicy") or "IfNotPresent"),
        service_account=raw.get("serviceAccount") or None,
        tolerations=tuple(tolerations),
        priority_classes=tuple(sorted((int(v), str(k)) for k, v in classes.items())),
        volume_size=_quantity(raw.get("volumeSize") or KubernetesSettings.volume_size, "volumeSize"),
        storage_class=raw.get("storageClass") or None,
        volume_access_mode=str(raw.get("volumeAccessMode") or KubernetesSettings.volume_access_mode),
    )


def _quantity(value: Any, field: str) -> str:
    try:
        parse_memory(value)
    except (QuantityError, TypeError, ValueError) as exc:
        raise ConfigError(f"config.yaml kubernetes.{field}: {exc}") from None
    return str(value)


def build_engine(settings: Settings, *, master_url: str | None, env: Mapping[str, str] | None = None) -> "KubernetesEngine":
    """The engine the master runs with ``engine: kubernetes``."""
    env = os.environ if env is None else env
    k8s = kubernetes_settings(settings, env, master_url=master_url)
    raw = settings.kubernetes
    return KubernetesEngine(k8s, connect(raw.get("kubeconfig"), raw.get("context")),
                            attempts_dir=settings.attempts_dir, snapshots_dir=settings.snapshots_dir)


class KubernetesEngine(Engine):
    name = "kubernetes"
    #: Named volumes are the namespace's PersistentVolumeClaims, not folders on the master.
    volumes_are_claims = True

    def __init__(self, settings: KubernetesSettings, api_client: Any, *, attempts_dir: Path,
                 snapshots_dir: Path | None = None) -> None:
        kubernetes = _kubernetes()
        self.settings = settings
        self.api_client = api_client
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.ApiException = kubernetes.client.ApiException
        self.attempts_dir = attempts_dir
        self.snapshots_dir = snapshots_dir
        self.logs = LogKeeper(self.core, settings.namespace, attempts_dir, self.ApiException)

    # -- helpers -------------------------------------------------------------
    def _json(self, call, *args, **kwargs) -> Any:
        """Call the API and take its JSON as plain dicts (no model objects: the status mapping reads dicts)."""
        try:
            response = call(*args, _preload_content=False, **kwargs)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise EngineError(f"Kubernetes API: {exc.status} {exc.reason}: {_message(exc)}") from None
        except OSError as exc:  # urllib3 wraps connection failures in OSError subclasses
            raise EngineError(f"cannot reach the Kubernetes API: {exc}") from None
        return json.loads(response.data)

    def attempt_dir(self, job: str, number: int) -> Path:
        return self.attempts_dir / job / str(number)

    def snapshot_path(self, snapshot: str) -> Path:
        if self.snapshots_dir is None:
            raise EngineError("this master keeps no code snapshots")
        return self.snapshots_dir / f"{snapshot.removeprefix('sha256:')}.tar.gz"

    def volume_dir(self, name: str) -> Path:
        raise SpecError(f"volume {name!r}: on Kubernetes, volumes are PersistentVolumeClaims; create one named "
                        f"{name!r} in namespace {self.settings.namespace!r} with kubectl, then name it in spec.volumes")

    def provision_volume(self, name: str, size_bytes: int | None) -> None:
        try:
            self.core.create_namespaced_persistent_volume_claim(
                self.settings.namespace, render_claim(name, size_bytes, self.settings), _preload_content=False)
        except self.ApiException as exc:
            if exc.status != 409:  # 409: a claim of that name exists (made with kubectl): use it
                raise EngineError(f"Kubernetes refused PersistentVolumeClaim {name}: {exc.status} {exc.reason}: "
                                  f"{_message(exc)}") from None
        except OSError as exc:
            raise EngineError(f"cannot reach the Kubernetes API: {exc}") from None

    def release_volume(self, name: str) -> None:
        """Delete the claim only if this master made it: a claim made with kubectl is the user's to delete."""
        claim = self._json(self.core.read_namespaced_persistent_volume_claim, name, self.settings.namespace)
        if claim is None or ((claim.get("metadata") or {}).get("labels") or {}).get(MASTER_LABEL) != self.settings.master_id:
            return
        try:
            self.core.delete_namespaced_persistent_volume_claim(name, self.settings.namespace, _preload_content=False)
        except self.ApiException as exc:
            if exc.status != 404:
                raise EngineError(f"could not delete PersistentVolumeClaim {name}: {exc.status} {exc.reason}") from None

    def volume_usage(self, name: str) -> tuple[str | None, int | None]:
        return f"PersistentVolumeClaim {self.settings.namespace}/{name}", None

    def output_dir(self, job: str, spec: JobSpec | None = None) -> Path:
        where = (f"on claim {self.settings.results_claim!r} under {job}/" if self.settings.results_claim
                 else "in the pod only (no kubernetes.resultsClaim is configured)")
        raise NotFoundError(f"job {job!r} ran on Kubernetes: its outputs are {where}, not on the master")

    def validate(self, spec: JobSpec) -> None:
        for volume in spec.spec.volumes:
            found = self._json(self.core.read_namespaced_persistent_volume_claim, volume.name, self.settings.namespace)
            if found is None:
                raise SpecError(f"spec.volumes: no PersistentVolumeClaim {volume.name!r} in namespace "
                                f"{self.settings.namespace!r}; create it with kubectl first",
                                details={"field": "spec.volumes", "value": volume.name})
        if spec.spec.environment is not None:
            raise SpecError("spec.environment: on Kubernetes a job's environment is its image; "
                            "set spec.image (or the master's default image) instead")
        if spec.spec.snapshot and not self.settings.master_url:
            raise SpecError("spec.snapshot: pods fetch code from the master, but no URL reachable from pods is "
                            "configured; set kubernetes.masterUrl, or bake the code into spec.image")

    # -- nodes ---------------------------------------------------------------
    def _node_list(self) -> list[dict[str, Any]]:
        return (self._json(self.core.list_node) or {}).get("items", [])

    def nodes(self) -> list[NodeCapacity]:
        return [_capacity(node) for node in self._node_list()]

    def describe_nodes(self, active: list[ActiveAttempt]) -> list[NodeRecord]:
        records = []
        for node in self.nodes():
            mine = [a for a in active if a.node == node.name]
            used = {g for a in mine for g in a.gpus}
            records.append(NodeRecord(
                name=node.name, engine=self.name, labels=dict(node.labels), cpu_millis=node.cpu_millis,
                memory_bytes=node.memory_bytes, gpus=list(node.gpus),
                free_cpu_millis=node.cpu_millis - sum(a.cpu_millis for a in mine),
                free_memory_bytes=node.memory_bytes - sum(a.memory_bytes for a in mine),
                free_gpus=[g for g in node.gpus if g not in used], running=len(mine),
            ))
        return records

    # -- attempts ------------------------------------------------------------
    def launch(self, order: LaunchOrder) -> dict[str, Any]:
        spec = JobSpec.model_validate(order.spec)
        manifest = render_job(order, spec, self.settings)
        name = manifest["metadata"]["name"]
        try:
            # The token's Secret first: a pod that finds no Secret would not start.
            self.core.create_namespaced_secret(self.settings.namespace, render_secret(order, self.settings),
                                               _preload_content=False)
        except self.ApiException as exc:
            if exc.status != 409:
                raise EngineError(f"Kubernetes refused the token Secret of {name}: {exc.status} {exc.reason}: "
                                  f"{_message(exc)}") from None
        except OSError as exc:
            raise EngineError(f"cannot reach the Kubernetes API: {exc}") from None
        try:
            self.batch.create_namespaced_job(self.settings.namespace, manifest, _preload_content=False)
        except self.ApiException as exc:
            if exc.status != 409:  # 409: created before (a relaunch after a master restart): never twice
                raise EngineError(f"Kubernetes refused Job {name}: {exc.status} {exc.reason}: {_message(exc)}") from None
        except OSError as exc:
            raise EngineError(f"cannot reach the Kubernetes API: {exc}") from None
        self.attempt_dir(order.job, order.number).mkdir(parents=True, exist_ok=True)
        return {"k8s_job": name, "namespace": self.settings.namespace}

    def _ours(self, kind: str) -> dict[tuple[str, int], list[dict[str, Any]]]:
        call = self.batch.list_namespaced_job if kind == "jobs" else self.core.list_namespaced_pod
        items = (self._json(call, self.settings.namespace, label_selector=selector_for(self.settings)) or {}).get("items", [])
        out: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for item in items:
            item_labels = (item.get("metadata") or {}).get("labels") or {}
            try:
                key = (item_labels[JOB_LABEL], int(item_labels[ATTEMPT_LABEL]))
            except (KeyError, ValueError):
                continue
            out.setdefault(key, []).append(item)
        return out

    def observe(self, active: list[ActiveAttempt]) -> list[Observation]:
        jobs, pods = self._ours("jobs"), self._ours("pods")
        out = []
        for attempt in active:
            key = (attempt.job, attempt.number)
            job = (jobs.get(key) or [None])[0]
            handle = {**attempt.handle, "k8s_job": object_name(*key), "namespace": self.settings.namespace}
            observation = interpret(attempt, job, pods.get(key, []), handle)
            pod = _pod_name(pods.get(key, []))
            if observation.phase == "ended":
                self.logs.keep(attempt.job, attempt.number, pod)
            elif observation.phase == "running" and pod:
                self.logs.follow(attempt.job, attempt.number, pod)
            out.append(observation)
        # Jobs of attempts no longer active ended in an earlier pass, and the store has recorded it:
        # their logs are kept, so remove them from the cluster now.
        active_keys = {(a.job, a.number) for a in active}
        for key, objects in jobs.items():
            if key not in active_keys:
                self.logs.keep(*key, _pod_name(pods.get(key, [])))
                self._delete(objects[0]["metadata"]["name"])
        return out

    def _delete(self, name: str) -> None:
        """Delete an attempt's Job (its pods follow) and its token Secret; a missing one is fine."""
        for call, target in ((self.batch.delete_namespaced_job, name),
                             (self.core.delete_namespaced_secret, f"{name}-token")):
            kwargs = {"propagation_policy": "Background"} if call == self.batch.delete_namespaced_job else {}
            try:
                call(target, self.settings.namespace, _preload_content=False, **kwargs)
            except self.ApiException as exc:
                if exc.status != 404:
                    log.warning("could not delete %s: %s %s", target, exc.status, exc.reason)
            except OSError as exc:
                log.warning("could not delete %s: %s", target, exc)

    def cancel(self, attempt: ActiveAttempt) -> None:
        pods = self._ours("pods").get((attempt.job, attempt.number), [])
        self.logs.keep(attempt.job, attempt.number, _pod_name(pods))
        self._delete(object_name(attempt.job, attempt.number))

    def read_log(self, job: str, number: int, offset: int) -> tuple[bytes, int]:
        pod = None
        if not self.logs.path(job, number).exists():
            pod = _pod_name(self._ours("pods").get((job, number), []))
        try:
            return self.logs.read(job, number, offset, pod)
        except self.ApiException as exc:
            raise EngineError(f"Kubernetes API: {exc.status} {exc.reason}: {_message(exc)}") from None

    def stop(self) -> None:
        self.logs.stop()


def _pod_name(pods: list[dict[str, Any]]) -> str | None:
    pod = newest(pods)
    return pod["metadata"]["name"] if pod else None


def _message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or ""
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or "")[:200]


def _capacity(node: dict[str, Any]) -> NodeCapacity:
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    gpus = int(allocatable.get(GPU_RESOURCE, "0") or 0)
    return NodeCapacity(
        name=node["metadata"]["name"],
        cpu_millis=parse_cpu(allocatable.get("cpu", "0")),
        memory_bytes=parse_memory(allocatable.get("memory", "0")),
        gpus=tuple(range(gpus)),
        labels=dict((node.get("metadata") or {}).get("labels") or {}),
        schedulable=ready and not (node.get("spec") or {}).get("unschedulable", False),
    )
