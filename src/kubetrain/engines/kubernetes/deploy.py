"""The master in its own cluster: the manifests ``kubetrain k8s manifests`` prints (pure render, nothing applied).

Called by the CLI (through the engine registry) and by the tests, which check every document against the API
server's strict schemas and check :data:`GRANTS` against the engine's own calls.  The choices, and why:

* **Least privilege, derived from the code.**  :data:`GRANTS` is the one table the Role and ClusterRole are
  rendered from; ``tests/k8s/test_deploy_manifests.py`` reads the engine's source (every kubernetes client
  method it references, mapped to the HTTP request and so to the RBAC verb the API server checks) and fails
  when this table grants one verb more or one less.  No wildcards.
* **Cluster-wide reads in a ClusterRole of their own**: nodes (the planner's view) and, optionally, pods in
  every namespace (capacity net of other tenants; on a 403 the engine counts its own namespace only).
* **One replica, ``strategy: Recreate``**: a master holds its home's lock and the ReadWriteOnce home claim; a
  rolling update would start a second master that can do neither.
* **The home is on a claim in both modes.**  With ``--postgres`` the records move to PostgreSQL, but the
  attempts' logs (kept after their pods are gone) and the uploaded code snapshots stay in ``KUBETRAIN_HOME``:
  an emptyDir would lose every log at the first restart.
* **The results claim is mounted only when it is ReadWriteMany.**  A ReadWriteOnce claim held by the master
  would pin every training pod to the master's node (or stop it with a Multi-Attach error); the master then
  reads results through a short-lived helper pod, as a master outside the cluster does.
* **Token-protected**: the master binds 0.0.0.0, so it refuses to start without ``KUBETRAIN_TOKEN``; that
  comes from a Secret the operator makes once (``kubetrain-token``), never from this output, so printing or
  committing the manifests leaks nothing (the ``--postgres`` URL aside, which the operator handed us).
* **The Service is ``kubetrain-master``, not ``kubetrain``**: Kubernetes gives every pod of the namespace
  variables named after each Service (``<NAME>_PORT=tcp://...``); a Service ``kubetrain`` would set
  ``KUBETRAIN_PORT`` to a URL in every job pod, which the settings read as the port.
* **Restricted Pod Security**: non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp, a
  read-only root file system (``/tmp`` is an emptyDir); requests = limits (Guaranteed QoS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from kubetrain import __version__
from kubetrain.engines.kubernetes.manifests import KubernetesSettings
from kubetrain.settings import DEFAULT_PORT

NAME = "kubetrain-master"
#: The Secret holding the first admin's token (key ``token``), made by the operator before applying.
TOKEN_SECRET = "kubetrain-token"
#: The Secret holding ``--postgres``'s URL (key ``url``).
DATABASE_SECRET = "kubetrain-database"
CONFIG_MAP = "kubetrain-config"
#: The results claim (``kubernetes.resultsClaim``): outputs and checkpoints under ``<claim>/<job>/``.
RESULTS_CLAIM = KubernetesSettings.results_claim
RESULTS_MOUNT = "/results"
DATA_MOUNT = "/var/lib/kubetrain"
#: A folder the master makes itself inside the claim: a claim's root may belong to root (some provisioners),
#: and the master must own its home to make it private (``prepare_home``).
HOME = f"{DATA_MOUNT}/home"
CONFIG_MOUNT = "/etc/kubetrain"
#: The user of ``deploy/master.Dockerfile``; any non-root uid works (without a passwd entry in the image the
#: master's own user is called ``uid-N``).
UID = 10001
#: The master's own requests = limits: the API, the reconcile loop and the log streams of running pods.
MASTER_RESOURCES = {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"}
LABELS = {"app.kubernetes.io/name": "kubetrain", "app.kubernetes.io/component": "master"}


@dataclass(frozen=True, slots=True)
class Grant:
    """One RBAC rule: these verbs on ``group``/``resource``, in the master's namespace or cluster-wide."""

    group: str  # "" is the core API group
    resource: str  # plural, with ``/subresource`` where one is called (pods/log)
    verbs: tuple[str, ...]
    cluster: bool  # True: a ClusterRole (cluster-scoped objects, or reads across namespaces)
    why: str  # shown as a comment above the rendered rule


#: Exactly what the engine calls (tests/k8s/test_deploy_manifests.py derives it from the source and compares).
GRANTS: tuple[Grant, ...] = (
    Grant("batch", "jobs", ("create", "delete", "get", "list", "watch"), False,
          "one Job per attempt; watched for the reconcile loop's view"),
    Grant("", "pods", ("create", "delete", "get", "list", "watch"), False,
          "attempts' pods (watched); a gang's other replicas stopped; the results reader pod"),
    Grant("", "pods/log", ("get",), False, "pod logs kept by the master; results read through the reader pod"),
    Grant("", "events", ("list", "watch"), False, "FailedScheduling, image pull errors: a job's events"),
    Grant("", "secrets", ("create", "delete", "get", "list"), False, "each attempt's job token"),
    Grant("", "services", ("create", "delete", "get"), False, "a gang's headless Service"),
    Grant("", "persistentvolumeclaims", ("create", "delete", "get"), False, "named volumes, the results claim"),
    Grant("metrics.k8s.io", "pods", ("list",), False, "peak memory and CPU of running pods (metrics-server)"),
    Grant("", "nodes", ("list",), True, "the planner's node view: allocatable, labels, taints"),
    Grant("", "pods", ("list",), True, "optional: other tenants' pods reduce free capacity (on 403: own namespace)"),
)


@dataclass(frozen=True, slots=True)
class DeployOptions:
    """What ``kubetrain k8s manifests`` was asked for (the CLI checks the values)."""

    namespace: str = "kubetrain"
    image: str = f"kubetrain-master:{__version__}"  # built from deploy/master.Dockerfile
    #: The image for jobs that name none (``kubernetes.image``); None: the engine's default.
    job_image: str | None = None
    postgres_url: str | None = None
    storage_class: str | None = None
    results_access_mode: str = "ReadWriteOnce"
    home_size: str = "10Gi"
    results_size: str = KubernetesSettings.results_size

    @property
    def master_url(self) -> str:
        """Where pods (jobs, and users inside the cluster) reach the master: the Service's in-cluster name."""
        return f"http://{NAME}.{self.namespace}.svc:{DEFAULT_PORT}"

    @property
    def mounts_results(self) -> bool:
        return self.results_access_mode == "ReadWriteMany"


@dataclass(frozen=True, slots=True)
class Manifest:
    """One document of the output, with the comment printed above it."""

    comment: str
    body: dict[str, Any]


def master_config(options: DeployOptions) -> dict[str, Any]:
    """The master's ``config.yaml`` (a ConfigMap copied into its home at start; edit it there for tolerations,
    priority classes, ``kueueQueue``, the jobs' default image...).  Not in it: the namespace (the pod's own)
    and the results mount (the Deployment's, so the two cannot disagree): both are variables."""
    section: dict[str, Any] = {"masterUrl": options.master_url, "resultsClaim": RESULTS_CLAIM,
                               "resultsAccessMode": options.results_access_mode, "resultsSize": options.results_size}
    if options.job_image:
        section["image"] = options.job_image
    if options.storage_class:
        section["resultsStorageClass"] = options.storage_class
        section["storageClass"] = options.storage_class  # `kubetrain volume create`'s claims too
    # Besides loopback (port-forward) and the masterUrl's host, the Service's other in-cluster names.
    hosts = [f"{NAME}.{options.namespace}.svc.cluster.local", f"{NAME}.{options.namespace}", NAME]
    return {"engine": "kubernetes", "allowedHosts": hosts, "kubernetes": section}


def master_env(options: DeployOptions) -> list[dict[str, Any]]:
    """The master container's variables: where its home is, how it listens, its token and database."""
    env: list[dict[str, Any]] = [
        {"name": "KUBETRAIN_HOME", "value": HOME},
        {"name": "KUBETRAIN_HOST", "value": "0.0.0.0"},
        {"name": "KUBETRAIN_PORT", "value": str(DEFAULT_PORT)},
        {"name": "KUBETRAIN_ENGINE", "value": "kubernetes"},
        # From the pod itself, so the engine works in the namespace its Role is for, wherever this is applied.
        {"name": "KUBETRAIN_K8S_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "KUBETRAIN_K8S_MASTER_URL", "value": options.master_url},
        {"name": "KUBETRAIN_TOKEN", "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token"}}},
        {"name": "HOME", "value": "/tmp"},  # the CLI run with kubectl exec keeps its files there
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
    ]
    if options.mounts_results:
        env.append({"name": "KUBETRAIN_K8S_RESULTS_MOUNT_PATH", "value": RESULTS_MOUNT})
    if options.postgres_url:
        env.append({"name": "KUBETRAIN_DATABASE_URL",
                    "valueFrom": {"secretKeyRef": {"name": DATABASE_SECRET, "key": "url"}}})
    return env


def _meta(name: str, options: DeployOptions, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespaced:
        meta["namespace"] = options.namespace
    meta["labels"] = dict(LABELS)
    return meta


def _rules(cluster: bool) -> list[dict[str, Any]]:
    rules = []
    for grant in GRANTS:
        if grant.cluster == cluster:
            rules.append({"apiGroups": [grant.group], "resources": [grant.resource], "verbs": sorted(grant.verbs)})
    return rules


def _why(cluster: bool) -> str:
    return "\n".join(f"{g.group or 'core'}/{g.resource} {','.join(sorted(g.verbs))}: {g.why}"
                     for g in GRANTS if g.cluster == cluster)


def _claim(name: str, mode: str, size: str, options: DeployOptions) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": [mode], "resources": {"requests": {"storage": size}}}
    if options.storage_class:
        spec["storageClassName"] = options.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(name, options), "spec": spec}


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}}


def _deployment(options: DeployOptions) -> dict[str, Any]:
    mounts = [{"name": "data", "mountPath": DATA_MOUNT}, {"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": NAME}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "config", "configMap": {"name": CONFIG_MAP}},
    ]
    if options.mounts_results:
        mounts.append({"name": "results", "mountPath": RESULTS_MOUNT})
        volumes.append({"name": "results", "persistentVolumeClaim": {"claimName": RESULTS_CLAIM}})
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5}
    resources = {"requests": dict(MASTER_RESOURCES), "limits": dict(MASTER_RESOURCES)}
    small = {"cpu": "100m", "memory": "64Mi", "ephemeral-storage": "64Mi"}
    # The ConfigMap is copied, not mounted, into the home: the home is a folder the master must own.
    copy_config = (f'mkdir -p "$KUBETRAIN_HOME" && cp {CONFIG_MOUNT}/config.yaml "$KUBETRAIN_HOME/config.yaml"')
    pod = {
        "serviceAccountName": NAME,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [{
            "name": "config", "image": options.image, "command": ["sh", "-c", copy_config],
            "env": [{"name": "KUBETRAIN_HOME", "value": HOME}],
            "volumeMounts": [{"name": "data", "mountPath": DATA_MOUNT},
                             {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True}],
            "resources": {"requests": dict(small), "limits": dict(small)},
            "securityContext": _security(),
        }],
        "containers": [{
            "name": "master", "image": options.image, "imagePullPolicy": "IfNotPresent",
            "command": ["kubetrain", "server"],
            "ports": [{"name": "http", "containerPort": DEFAULT_PORT, "protocol": "TCP"}],
            "env": master_env(options),
            "volumeMounts": mounts,
            "resources": resources,
            # Migrations run before the master listens: up to 5 minutes before liveness counts.
            "startupProbe": {**probe, "periodSeconds": 5, "failureThreshold": 60},
            "livenessProbe": {**probe, "failureThreshold": 3},
            "readinessProbe": {**probe, "failureThreshold": 1},
            "securityContext": _security(),
        }],
        "volumes": volumes,
        # Time for the master to stop its children and close the store cleanly (it handles SIGTERM).
        "terminationGracePeriodSeconds": 30,
    }
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(NAME, options),
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": dict(LABELS)},
                 "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod}},
    }


def render_manifests(options: DeployOptions) -> list[Manifest]:
    """Every object the master needs in namespace ``options.namespace``, in the order to apply them."""
    ns = options.namespace
    account = [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]
    cluster_name = f"kubetrain-master-{ns}"  # one per namespace: masters of several namespaces coexist
    out = [
        Manifest("The master's identity in the cluster; only the roles below are bound to it.",
                 {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(NAME, options)}),
        Manifest("Exactly the verbs the engine calls in its namespace (checked against the code by a test):\n"
                 + _why(False),
                 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(NAME, options),
                  "rules": _rules(False)}),
        Manifest("", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                      "metadata": _meta(NAME, options), "subjects": account,
                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}}),
        Manifest("Cluster-wide reads. Optional in part: without pods across namespaces the engine counts only its "
                 "own namespace's pods\n(other tenants' pods then go unseen by admission); without nodes it "
                 "cannot plan at all.\n" + _why(True),
                 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": _meta(cluster_name, options, namespaced=False), "rules": _rules(True)}),
        Manifest("", {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                      "metadata": _meta(cluster_name, options, namespaced=False), "subjects": account,
                      "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": cluster_name}}),
    ]
    if options.postgres_url:
        out.append(Manifest("The database URL (with its password): keep this output out of version control.",
                            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                             "metadata": _meta(DATABASE_SECRET, options), "stringData": {"url": options.postgres_url}}))
    if options.mounts_results:  # needed before the master starts; else the engine makes it on first use
        out.append(Manifest("Outputs and checkpoints of every job, under [<experiment>/]<job>/; the master "
                            f"mounts it at {RESULTS_MOUNT}.",
                            _claim(RESULTS_CLAIM, options.results_access_mode, options.results_size, options)))
    out += [
        Manifest("The master's config.yaml, copied into its home at every start: edit it here (tolerations,\n"
                 "priorityClasses, kueueQueue, image...), apply, then `kubectl rollout restart deploy/kubetrain-master`.",
                 {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CONFIG_MAP, options),
                  "data": {"config.yaml": yaml.safe_dump(master_config(options), sort_keys=False)}}),
        Manifest("The master's home: attempts' logs and code snapshots"
                 + ("" if options.postgres_url else ", and the SQLite database") + ".",
                 _claim(NAME, "ReadWriteOnce", options.home_size, options)),
        Manifest("Needs Secret kubetrain-token first (the first admin's token):\n"
                 f"  kubectl -n {ns} create secret generic {TOKEN_SECRET} "
                 "--from-literal=token=$(openssl rand -hex 32)", _deployment(options)),
        Manifest(f"Jobs and users inside the cluster reach the master at {options.master_url}.",
                 {"apiVersion": "v1", "kind": "Service", "metadata": _meta(NAME, options),
                  "spec": {"type": "ClusterIP", "selector": dict(LABELS),
                           "ports": [{"name": "http", "port": DEFAULT_PORT, "targetPort": "http", "protocol": "TCP"}]}}),
        Manifest("Only the API port is open (users and jobs call it, from anywhere); nothing else reaches the pod.",
                 {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _meta(NAME, options),
                  "spec": {"podSelector": {"matchLabels": dict(LABELS)}, "policyTypes": ["Ingress"],
                           "ingress": [{"ports": [{"port": DEFAULT_PORT, "protocol": "TCP"}]}]}}),
    ]
    return out


class _Dumper(yaml.SafeDumper):
    """Short lists on one line (``verbs: [get, list]``); a multi-line string (the config) as a literal block."""

    def ignore_aliases(self, data: Any) -> bool:  # the probes share a dict: no &id001 anchors in the output
        return True


def _string(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _string)


def to_yaml(manifests: list[Manifest]) -> str:
    """Multi-document YAML, each document after its comment (``kubectl apply -f -`` reads it as is)."""
    parts = []
    for manifest in manifests:
        comment = "".join(f"# {line}\n" if line else "#\n" for line in manifest.comment.splitlines())
        parts.append("---\n" + comment + yaml.dump(manifest.body, Dumper=_Dumper, sort_keys=False,
                                                   default_flow_style=None, width=120))
    return "".join(parts)
