"""The Kubernetes engine: one ``batch/v1`` Job per attempt; the cluster runs, the master decides and records.

The master stays the single place to submit and watch: it admits jobs with its
own planner against the cluster's node view (what fits where, label selectors,
reasons for waiting), then hands each attempt to Kubernetes as a Job that the
kube-scheduler binds.  Everything the engine needs to find its objects again is
in their labels, so a restarted master re-attaches by listing, not by memory.

Logs are streamed into the master's attempt folder while a pod runs and made
whole when it ends (see ``logs.py``); only then is its Job deleted (one pass
after the end was recorded), so logs outlive pods, which plain Kubernetes does not give.

A job of several replicas is an Indexed Job and a headless Service (``gang.py``); its end is
reported only once none of its pods runs any more (the engine stops the others first), so the
master never starts the next attempt while a replica of this one still holds its node.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import urllib3

from kubetrain.core.attempts import ActiveAttempt, AttemptHandle, LaunchOrder, Phase
from kubetrain.core.errors import ConfigError, EngineError, NotFoundError, SpecError
from kubetrain.core.planning import NodeCapacity
from kubetrain.core.records import NodeRecord, UsageRecord
from kubetrain.core.specs import JobSpec
from kubetrain.core.distributed import replicas_of
from kubetrain.engines.base import Capabilities, Engine, Observation
from kubetrain.engines.kubernetes.gang import longest_job_name, service_of
from kubetrain.engines.kubernetes.gang_status import (
    by_index,
    interpret_gang,
    is_live,
)
from kubetrain.engines.kubernetes.capacity import PodLister, _capacity, node_capacities
from kubetrain.engines.kubernetes.config import kubernetes_settings
from kubetrain.engines.kubernetes.events import event_notes
from kubetrain.engines.kubernetes.informer import ClusterWatch, about, by_attempt
from kubetrain.engines.kubernetes.logs import LogKeeper
from kubetrain.engines.kubernetes.manifests import (
    ATTEMPT_LABEL,
    JOB_LABEL,
    MASTER_LABEL,
    RESULTS_LABEL,
    VOLUME_LABEL,
    KubernetesSettings,
    object_name,
    check_results_access,
    render_claim,
    render_job,
    render_secret,
    render_service,
    secret_of,
    selector_for,
)
from kubetrain.engines.kubernetes.results import (attached_node, copy_folder, ensure_results_claim, local_outputs,
                                                  output_location, sweep_readers)
from kubetrain.engines.kubernetes.status import interpret, newest
from kubetrain.engines.kubernetes.usage import PodMetricsReader, usage_records
from kubetrain.settings import Settings

log = logging.getLogger("kubetrain.kubernetes")

#: ``kubetrain k8s manifests`` labels the master's own objects (its home claim) ``app.kubernetes.io/name: kubetrain``.
DEPLOY_NAME_LABEL = "app.kubernetes.io/name"
#: Seconds any single (non-streaming) API call may take: a hung API server must not freeze the loop.
REQUEST_TIMEOUT = 30
#: How often observe() looks for token Secrets left without their Job.
SECRET_SWEEP_SECONDS = 60.0
#: In an attempt's folder on the master: ``cancel`` deleted its Job (so a missing Job reads as cancelled,
#: also to a restarted master, whether or not the store has recorded the request yet).
CANCELLED = "cancelled"


def _kubernetes():
    try:
        import kubernetes
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigError("engine kubernetes needs the kubernetes package: pip install 'kubetrain[kubernetes]'") from None
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


def build_engine(settings: Settings, *, master_url: str | None, env: Mapping[str, str] | None = None) -> "KubernetesEngine":
    """The engine the master runs with ``engine: kubernetes``."""
    env = os.environ if env is None else env
    k8s = kubernetes_settings(settings, env, master_url=master_url)
    raw = settings.engine_section("kubernetes")
    return KubernetesEngine(k8s, connect(raw.get("kubeconfig"), raw.get("context")),
                            attempts_dir=settings.attempts_dir, snapshots_dir=settings.snapshots_dir)


class KubernetesEngine(Engine):
    name = "kubernetes"
    #: Named volumes are the namespace's PersistentVolumeClaims, not folders on the master; pods fetch code
    #: snapshots from the master; the kube-scheduler places pods on the cluster's nodes.  Live usage comes
    #: from metrics-server where the cluster has one (usage.py).  Gangs: an Indexed Job each.
    capabilities = Capabilities(volumes=True, claims_volumes=True, serves_snapshots=True, multi_node=True,
                                replicas=True, live_usage=True)

    def __init__(self, settings: KubernetesSettings, api_client: Any, *, attempts_dir: Path,
                 snapshots_dir: Path | None = None, watch: bool = True) -> None:
        kubernetes = _kubernetes()
        self.settings = settings
        self.api_client = api_client
        self.batch = kubernetes.client.BatchV1Api(api_client)
        self.core = kubernetes.client.CoreV1Api(api_client)
        self.ApiException = kubernetes.client.ApiException
        self.attempts_dir = attempts_dir
        self.snapshots_dir = snapshots_dir
        self.logs = LogKeeper(self.core, settings.namespace, attempts_dir, self.ApiException)
        self._next_sweep = 0.0  # monotonic time of the next leftover-Secret sweep
        #: Jobs, Pods and Events watched (informer.py), started by the first observe; ``watch=False``: every pass
        #: LISTs instead (tests that play the LIST path through a fake API object).
        self._watching = watch
        self._watch: ClusterWatch | None = None
        self.custom_objects = kubernetes.client.CustomObjectsApi(api_client)
        #: Every non-terminal pod of the cluster (or of our namespace, where the master may not read others).
        self.pod_lister = PodLister(self.core, settings.namespace, self._call)
        self.pod_metrics = PodMetricsReader(self.custom_objects, settings.namespace, selector_for(settings), self._call)
        #: This master's live attempts, as of the last pass: the planner counts what their pods hold itself.
        self._active_keys: set[tuple[str, int]] = set()
        self._results_claim_ready = False  # made on the first launch, once per process (results.py)

    # -- helpers -------------------------------------------------------------
    def _call(self, call, *args, what: str, allow: tuple[int, ...] = (), **kwargs) -> Any:
        """One API call with a timeout; its JSON as plain dicts, or None for a status in ``allow``.

        Every failure becomes an EngineError naming what was attempted: the kubernetes client
        raises ApiException for HTTP errors and urllib3 errors (not OSErrors) for transport ones.
        """
        try:
            response = call(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT, **kwargs)
        except self.ApiException as exc:
            if exc.status in allow:
                return None
            raise EngineError(f"Kubernetes API, {what}: {exc.status} {exc.reason}: {_message(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise EngineError(f"cannot reach the Kubernetes API ({what}): {exc}") from None
        return json.loads(response.data) if response.data else {}

    def _owned(self, obj: dict[str, Any] | None, job: str | None = None, number: int | None = None) -> bool:
        """Is ``obj`` this master's (and, if given, that attempt's)? Names alone can collide across masters."""
        found = ((obj or {}).get("metadata") or {}).get("labels") or {}
        return (found.get(MASTER_LABEL) == self.settings.master_id
                and (job is None or found.get(JOB_LABEL) == job)
                and (number is None or found.get(ATTEMPT_LABEL) == str(number)))

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
        # The results claim's name is the master's even before its first launch makes it.
        self._refuse_masters_claim(name, None, field="name")
        # 409: a claim of that name exists (made with kubectl, or by us before): use it -- unless it is the
        # master's own (its home, the results claim), which no user may adopt and then delete.
        if self._call(self.core.create_namespaced_persistent_volume_claim, self.settings.namespace,
                      render_claim(name, size_bytes, self.settings), what=f"create PersistentVolumeClaim {name}",
                      allow=(409,)) is None:
            self._refuse_masters_claim(name, self._read_claim(name), field="name")

    def release_volume(self, name: str) -> None:
        """Delete the claim only if this master made it *as that volume*: a claim made with kubectl is the
        user's to delete, and the master's own claims (results, home) are never a volume's."""
        claim = self._read_claim(name)
        labels = ((claim or {}).get("metadata") or {}).get("labels") or {}
        if self._owned(claim) and labels.get(VOLUME_LABEL) == name and name != self.settings.results_claim:
            self._call(self.core.delete_namespaced_persistent_volume_claim, name, self.settings.namespace,
                       what=f"delete PersistentVolumeClaim {name}", allow=(404,))

    def _read_claim(self, name: str) -> dict[str, Any] | None:
        return self._call(self.core.read_namespaced_persistent_volume_claim, name, self.settings.namespace,
                          what=f"read PersistentVolumeClaim {name}", allow=(404,))

    def _refuse_masters_claim(self, name: str, claim: dict[str, Any] | None, *, field: str) -> None:
        """The results claim holds every user's outputs and the master's home claim its database and socket:
        a job mounting either, or a user adopting one as a volume, would reach everyone's data."""
        labels = ((claim or {}).get("metadata") or {}).get("labels") or {}
        masters = (name == self.settings.results_claim or labels.get(RESULTS_LABEL)
                   or labels.get(DEPLOY_NAME_LABEL) == "kubetrain"
                   or (labels.get(MASTER_LABEL) and labels.get(VOLUME_LABEL) != name))
        if masters:
            raise SpecError(f"{field}: PersistentVolumeClaim {name!r} is the master's own (every job's results, or "
                            "its home), not a volume; a job writes its outputs to KUBETRAIN_OUTPUT_DIR and reads "
                            "others' with `kubetrain artifacts` / `kubetrain cp`; use another name",
                            details={"field": field, "value": name})

    def volume_usage(self, name: str) -> tuple[str | None, int | None]:
        return f"PersistentVolumeClaim {self.settings.namespace}/{name}", None

    def output_dir(self, job: str, spec: JobSpec | None = None) -> Path:
        """The results claim's folder where this master mounts it (in the cluster), else this master's copy,
        fetched through a short-lived helper pod (results.py)."""
        if spec is None:
            raise NotFoundError(f"job {job!r}: its spec is needed to find its outputs on the results claim")
        if self.settings.results_mount_path:
            return Path(self.settings.results_mount_path) / output_location(self.settings, job, spec)
        found = self._call(self.batch.list_namespaced_job, self.settings.namespace,
                           label_selector=f"{selector_for(self.settings)},{JOB_LABEL}={job}", limit=1,
                           what=f"list the Jobs of {job}") or {}
        return local_outputs(self.core, self.settings, job=job, spec=spec, attempts_dir=self.attempts_dir,
                             live=bool(found.get("items")), call=self._call,
                             node=lambda: attached_node(self.settings, self._pod_items()))  # only for a fetch

    def forget_attempts(self, job: str, numbers: list[int]) -> None:
        """A deleted job's attempt folders (kept logs, the ``cancelled`` mark) and its copy of its outputs go
        with it, so a new job of that name starts clean; the results claim keeps the originals."""
        for number in numbers:
            shutil.rmtree(self.attempt_dir(job, number), ignore_errors=True)
        shutil.rmtree(copy_folder(self.attempts_dir, job), ignore_errors=True)
        (self.attempts_dir / job / "outputs.json").unlink(missing_ok=True)
        try:
            (self.attempts_dir / job).rmdir()
        except OSError:
            pass  # not empty: an attempt this call was not told of

    def validate(self, spec: JobSpec) -> None:
        for volume in spec.spec.volumes:
            found = self._call(self.core.read_namespaced_persistent_volume_claim, volume.name, self.settings.namespace,
                               what=f"read PersistentVolumeClaim {volume.name}", allow=(404,))
            if found is None:
                raise SpecError(f"spec.volumes: no PersistentVolumeClaim {volume.name!r} in namespace "
                                f"{self.settings.namespace!r}; create it with kubectl first",
                                details={"field": "spec.volumes", "value": volume.name})
            self._refuse_masters_claim(volume.name, found, field="spec.volumes")
        if spec.spec.environment is not None:
            raise SpecError("spec.environment: on Kubernetes a job's environment is its image; "
                            "set spec.image (or the master's default image) instead")
        longest = longest_job_name(spec.spec.replicas)
        if spec.spec.replicas > 1 and len(spec.metadata.name) > longest:
            raise SpecError(f"metadata.name: {spec.metadata.name!r} is {len(spec.metadata.name)} characters; a job of "
                            f"{spec.spec.replicas} replicas on Kubernetes may have at most {longest}, because each "
                            "replica's pod hostname <job>-<attempt>-<replica> must be a DNS label (63 characters); "
                            "use a shorter name", details={"field": "metadata.name", "value": spec.metadata.name})
        schedulable = 1  # a gang on a claim not ReadWriteMany fits only a cluster of one node (manifests.py)
        if spec.spec.replicas > 1 and self.settings.results_access_mode != "ReadWriteMany":
            schedulable = sum(1 for node in self._node_list() if _capacity(node, self.settings.tolerations).schedulable)
        check_results_access(self.settings, spec, schedulable_nodes=schedulable)
        if spec.spec.snapshot and not self.settings.master_url:
            raise SpecError("spec.snapshot: pods fetch code from the master, but no URL reachable from pods is "
                            "configured; set kubernetes.masterUrl, or bake the code into spec.image")

    # -- nodes ---------------------------------------------------------------
    def _node_list(self) -> list[dict[str, Any]]:
        return (self._call(self.core.list_node, what="list nodes") or {}).get("items", [])

    def nodes(self) -> list[NodeCapacity]:
        """The cluster's nodes: totals allocatable, free what every other pod leaves (capacity.py)."""
        return node_capacities(self._node_list(), self.pod_lister(), master_id=self.settings.master_id,
                               active_keys=self._active_keys, tolerations=self.settings.tolerations)

    def describe_nodes(self, active: list[ActiveAttempt]) -> list[NodeRecord]:
        self._active_keys = {(a.job, a.number) for a in active}  # an API process never runs observe()
        return super().describe_nodes(active)

    def usage(self, active: list[ActiveAttempt]) -> list[UsageRecord]:
        """What running pods use now, from metrics-server (none without it): ``top``, the usage sampler's peaks."""
        metrics = self.pod_metrics.read()
        return usage_records(metrics, by_attempt(self._pod_items()), active) if metrics else []

    def _pod_items(self) -> list[dict[str, Any]]:
        """This master's pods: from the pods watch while it is current (no request), else one LIST."""
        watch = self._watch
        if watch is not None and watch.pods.healthy:
            return watch.pods.snapshot()[0]
        return (self._call(self.core.list_namespaced_pod, self.settings.namespace,
                           label_selector=selector_for(self.settings), what="list pods") or {}).get("items", [])

    # -- attempts ------------------------------------------------------------
    def launch(self, order: LaunchOrder) -> AttemptHandle:
        spec = JobSpec.model_validate(order.spec)
        if not self._results_claim_ready:  # outputs and checkpoints go there: made on first use
            ensure_results_claim(self.core, self.settings, self._call)
            self._results_claim_ready = True
        manifest = render_job(order, spec, self.settings)
        name = manifest["metadata"]["name"]
        secret = render_secret(order, self.settings)
        ns = self.settings.namespace
        # The token's Secret first: a pod that finds no Secret would not start.
        if self._call(self.core.create_namespaced_secret, ns, secret, what=f"create Secret {secret['metadata']['name']}",
                      allow=(409,)) is None:
            self._claim_existing(self.core.read_namespaced_secret, secret["metadata"]["name"], order)
        service = render_service(order, spec, self.settings) if spec.spec.replicas > 1 else None
        if service is not None and self._call(self.core.create_namespaced_service, ns, service, allow=(409,),
                                              what=f"create Service {service['metadata']['name']}") is None:
            self._claim_existing(self.core.read_namespaced_service, service["metadata"]["name"], order)
        try:
            created = self._call(self.batch.create_namespaced_job, ns, manifest, what=f"create Job {name}", allow=(409,))
        except EngineError:
            self._call(self.core.delete_namespaced_secret, secret["metadata"]["name"], ns,
                       what=f"delete Secret {secret['metadata']['name']}", allow=(404,))
            if service is not None:
                self._call(self.core.delete_namespaced_service, service["metadata"]["name"], ns,
                           what=f"delete Service {service['metadata']['name']}", allow=(404,))
            raise
        if created is None:  # 409: launched before (a relaunch after a master restart) -- if it is ours
            self._claim_existing(self.batch.read_namespaced_job, name, order)
        self.attempt_dir(order.job, order.number).mkdir(parents=True, exist_ok=True)
        # A mark left by an earlier job of this name must not read as this attempt's cancel.
        (self.attempt_dir(order.job, order.number) / CANCELLED).unlink(missing_ok=True)
        return self._handle(order.job, order.number, AttemptHandle())

    def _handle(self, job: str, number: int, known: AttemptHandle) -> AttemptHandle:
        """``known`` with where this engine keeps the attempt: its Job, and the master's copy of its log."""
        return replace(known, attempt_dir=str(self.attempt_dir(job, number)), log_path=str(self.logs.path(job, number)),
                       data={**known.data, "k8s_job": object_name(job, number), "namespace": self.settings.namespace})

    def _claim_existing(self, read, name: str, order: LaunchOrder) -> None:
        existing = self._call(read, name, self.settings.namespace, what=f"read {name}", allow=(404,))
        if existing is not None and not self._owned(existing, order.job, order.number):
            raise EngineError(f"{name} already exists in namespace {self.settings.namespace!r} and is not this "
                              "attempt's (another master, or made by hand); rename the job or give each master "
                              "its own namespace or kubernetes.masterId")

    def _ours(self, kind: str) -> dict[tuple[str, int], list[dict[str, Any]]]:
        call = {"jobs": self.batch.list_namespaced_job, "pods": self.core.list_namespaced_pod,
                "secrets": self.core.list_namespaced_secret}[kind]
        return by_attempt((self._call(call, self.settings.namespace, label_selector=selector_for(self.settings),
                                      what=f"list {kind}") or {}).get("items", []))

    def observe(self, active: list[ActiveAttempt]) -> list[Observation]:
        self._active_keys = {(a.job, a.number) for a in active}
        out = self._observe(active)
        # What the planner will count itself from now on: attempts that did not end in this pass.  The pods of
        # those that did (still terminating) are anyone's, so nodes() takes them off (capacity.py).
        self._active_keys = {(o.job, o.number) for o in out if o.phase is not Phase.ENDED}
        return out

    def _observe(self, active: list[ActiveAttempt]) -> list[Observation]:
        # The pods read are never older than a Job's verdict (ClusterWatch.view waits for the pods watch, or
        # lists them; before the watches have synced, two LISTs, Jobs first), so a Job's verdict always comes
        # with its pod's end, and a pod that ended after its Job was read waits for the verdict
        # (status.interpret) instead of being guessed at (tests/unit/test_k8s_status.py plays every
        # interleaving; tests/engines/test_k8s_watch_race.py the watches').
        jobs, pods, events = self._read()
        out = []
        for attempt in active:
            key = (attempt.job, attempt.number)
            job = (jobs.get(key) or [None])[0]
            if job is None and not attempt.cancel_requested and (self.attempt_dir(*key) / CANCELLED).exists():
                attempt = replace(attempt, cancel_requested=True)
            handle = self._handle(attempt.job, attempt.number, AttemptHandle.of(attempt.handle))
            replicas = replicas_of(attempt.spec)
            if replicas > 1:
                gang = self._observe_gang(attempt, job, pods.get(key, []), handle, replicas)
                out.append(_with_events(gang, [job, *pods.get(key, [])], events))
                continue
            observation = _with_events(interpret(attempt, job, pods.get(key, []), handle),
                                       [job, *pods.get(key, [])], events)
            pod = _pod_name(pods.get(key, []))
            if observation.phase is Phase.ENDED:
                self.logs.keep(attempt.job, attempt.number, pod)
            elif observation.phase is Phase.RUNNING and pod:
                self.logs.follow(attempt.job, attempt.number, pod)
            out.append(observation)
        # Jobs of attempts no longer active ended in an earlier pass, and the store has recorded it:
        # their logs are kept, so remove them from the cluster now.
        active_keys = {(a.job, a.number) for a in active}
        for key, objects in jobs.items():
            if key not in active_keys:
                replicas = int((objects[0].get("spec") or {}).get("completions") or 1)
                self._keep_logs(*key, pods.get(key, []), replicas)
                self._delete(objects[0]["metadata"]["name"], gang=_is_gang(objects[0]))
        # A token Secret whose Job is gone (deleted by hand, refused, or its delete failed) and whose attempt
        # has ended: delete it, so no credential of an ended attempt lingers in the cluster.  Leaks are rare:
        # one more LIST per SECRET_SWEEP_SECONDS, not per pass.
        if time.monotonic() < self._next_sweep:
            return out
        self._next_sweep = time.monotonic() + SECRET_SWEEP_SECONDS
        try:  # reader pods a master left behind (it died between creating and deleting one)
            sweep_readers(self.core, self.settings, self._call)
        except EngineError as exc:
            log.warning("%s", exc.message)
        for key, objects in self._ours("secrets").items():
            if key not in active_keys and key not in jobs:
                # A gang's Service goes before its Secret (in _delete too): a Secret left means a Service may be.
                service = service_of(object_name(*key))
                found = self._call(self.core.read_namespaced_service, service, self.settings.namespace,
                                   what=f"read Service {service}", allow=(404,))
                if self._owned(found, *key):
                    self._call(self.core.delete_namespaced_service, service, self.settings.namespace,
                               what=f"delete a leftover Service {service}", allow=(404,))
                self._call(self.core.delete_namespaced_secret, objects[0]["metadata"]["name"],
                           self.settings.namespace, what="delete a leftover token Secret", allow=(404,))
        return out

    def _read(self) -> tuple[dict[tuple[str, int], list[dict[str, Any]]], dict[tuple[str, int], list[dict[str, Any]]],
                             list[dict[str, Any]]]:
        """This pass's Jobs and Pods by attempt (the pods never older than a Job's verdict) and the Events
        about them: from the watches (informer.py) once they have synced, else two LISTs, Jobs first."""
        if self._watch is None and self._watching:
            self._watch = ClusterWatch(self.batch, self.core, namespace=self.settings.namespace,
                                       label_selector=selector_for(self.settings)).start()
        try:
            view = self._watch.view() if self._watch is not None else None
        except self.ApiException as exc:  # its fallback LIST of pods
            raise EngineError(f"Kubernetes API, list pods: {exc.status} {exc.reason}: {_message(exc)}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise EngineError(f"cannot reach the Kubernetes API (list pods): {exc}") from None
        if view is None:
            return self._ours("jobs"), self._ours("pods"), []
        return by_attempt(view.jobs), by_attempt(view.pods), view.events

    def _observe_gang(self, attempt: ActiveAttempt, job: dict[str, Any] | None, pods: list[dict[str, Any]],
                      handle: AttemptHandle, replicas: int) -> Observation:
        """A gang's observation; its end only once no pod of it runs (the others are stopped first)."""
        observation = interpret_gang(attempt, job, pods, handle, replicas)
        live = [pod for pod in pods if is_live(pod, time.time())]
        if observation.phase is Phase.ENDED and live:
            # One replica's end is the gang's: stop the others (the Job controller does too, once the Job has
            # failed; a lost node or a cancel needs us), and say "ended" only when none runs any more.
            for pod in live:
                if self._owned(pod, attempt.job, attempt.number) and not pod["metadata"].get("deletionTimestamp"):
                    try:
                        self._call(self.core.delete_namespaced_pod, pod["metadata"]["name"], self.settings.namespace,
                                   what=f"delete pod {pod['metadata']['name']}", allow=(404,))
                    except EngineError as exc:  # tried again next pass, while the attempt is still reported
                        log.warning("%s", exc.message)
            ran = bool(attempt.started_at or observation.started_at)
            return Observation(attempt.job, attempt.number, Phase.RUNNING if ran else Phase.STARTING,
                               observation.handle, started_at=observation.started_at)
        if observation.phase is Phase.ENDED:
            self._keep_logs(attempt.job, attempt.number, pods, replicas)
        elif observation.phase is Phase.RUNNING or observation.phase is Phase.STARTING:
            for index, pod in by_index(pods, replicas).items():
                if is_live(pod, time.time()) and (pod.get("spec") or {}).get("nodeName"):
                    self.logs.follow(attempt.job, attempt.number, pod["metadata"]["name"], index)
        return observation

    def _keep_logs(self, job: str, number: int, pods: list[dict[str, Any]], replicas: int) -> None:
        """Make an ended attempt's logs final: its pod's, or each replica's of a gang."""
        if replicas <= 1:
            self.logs.keep(job, number, _pod_name(pods))
            return
        indexed = by_index(pods, replicas)
        for index in range(replicas):
            pod = indexed.get(index)
            self.logs.keep(job, number, pod["metadata"]["name"] if pod else None, index)

    def _delete(self, name: str, gang: bool = False) -> None:
        """Delete an attempt's Job (its pods follow), its token Secret and a gang's Service; a missing one is fine."""
        ns = self.settings.namespace
        try:
            self._call(self.batch.delete_namespaced_job, name, ns, propagation_policy="Background",
                       what=f"delete Job {name}", allow=(404,))
            if gang:
                self._call(self.core.delete_namespaced_service, service_of(name), ns,
                           what=f"delete Service {service_of(name)}", allow=(404,))
            self._call(self.core.delete_namespaced_secret, secret_of(name), ns, what=f"delete Secret {secret_of(name)}",
                       allow=(404,))
        except EngineError as exc:  # retried: the next pass finds the Job (or the Secret) again
            log.warning("%s", exc.message)

    def cancel(self, attempt: ActiveAttempt) -> None:
        key = (attempt.job, attempt.number)
        jobs = self._ours("jobs")
        self._keep_logs(*key, self._ours("pods").get(key, []), replicas_of(attempt.spec))
        if key in jobs:
            self.attempt_dir(*key).mkdir(parents=True, exist_ok=True)
            (self.attempt_dir(*key) / CANCELLED).touch()  # by label, never by name alone: the name may be another master's
            self._delete(jobs[key][0]["metadata"]["name"], gang=_is_gang(jobs[key][0]))

    def read_log(self, job: str, number: int, offset: int, replica: int = 0) -> tuple[bytes, int]:
        pod = None
        if not self.logs.path(job, number, replica).exists():
            pods = self._ours("pods").get((job, number), [])
            if replica == 0 and not by_index(pods, 1):
                pod = _pod_name(pods)
            else:
                found = by_index(pods, replica + 1).get(replica)
                pod = found["metadata"]["name"] if found else None
        try:
            return self.logs.read(job, number, offset, pod, replica)
        except self.ApiException as exc:
            raise EngineError(f"Kubernetes API: {exc.status} {exc.reason}: {_message(exc)}") from None

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        self.logs.stop()


def _with_events(observation: Observation, objects: list[dict[str, Any] | None],
                 events: list[dict[str, Any]]) -> Observation:
    """A starting attempt's notes plus the Warning events about its Job and pods (FailedMount, image pulls...)."""
    if observation.phase is not Phase.STARTING or not events:
        return observation
    extra = event_notes(about(events, [o for o in objects if o]), known=observation.notes)
    return replace(observation, notes=observation.notes + extra) if extra else observation


def _is_gang(job: dict[str, Any]) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


def _pod_name(pods: list[dict[str, Any]]) -> str | None:
    pod = newest(pods)
    return pod["metadata"]["name"] if pod else None


def _message(exc: Any) -> str:
    try:
        return json.loads(exc.body).get("message") or ""
    except (TypeError, ValueError, AttributeError):
        return str(exc.body or "")[:200]
