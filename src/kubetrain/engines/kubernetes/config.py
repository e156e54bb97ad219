"""The ``kubernetes:`` section of config.yaml and the ``KUBETRAIN_K8S_*`` variables, read into :class:`KubernetesSettings`.

Apart from the engine so that the settings can be read (and their errors shown) without the
kubernetes client, and so that one place says which keys exist.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import make_url

from kubetrain.core.errors import ConfigError
from kubetrain.core.quantities import QuantityError, parse_memory
from kubetrain.core.specs import LABEL_VALUE_RE
from kubetrain.engines.kubernetes.manifests import ACCESS_MODES, KubernetesSettings
from kubetrain.settings import Settings

CONFIG_FIELDS = {"namespace", "image", "masterUrl", "masterId", "resultsClaim", "imagePullPolicy",
                 "serviceAccount", "tolerations", "priorityClasses", "kubeconfig", "context",
                 "volumeSize", "storageClass", "volumeAccessMode", "resultsAccessMode", "resultsStorageClass",
                 "resultsSize", "resultsMountPath", "kueueQueue"}
ENV = {"namespace": "KUBETRAIN_K8S_NAMESPACE", "image": "KUBETRAIN_K8S_IMAGE",
       "masterUrl": "KUBETRAIN_K8S_MASTER_URL", "resultsClaim": "KUBETRAIN_K8S_RESULTS_CLAIM",
       # Set by the master's own Deployment (``kubetrain k8s manifests``), which mounts the results claim.
       "resultsMountPath": "KUBETRAIN_K8S_RESULTS_MOUNT_PATH", "kueueQueue": "KUBETRAIN_K8S_KUEUE_QUEUE"}
#: A LocalQueue's name as Kueue's label carries it: an object name that is also a label value.
_QUEUE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")


def kubernetes_settings(settings: Settings, env: Mapping[str, str], *, master_url: str | None) -> KubernetesSettings:
    """``kubernetes:`` from config.yaml, then ``KUBETRAIN_K8S_*`` variables; unknown keys are errors."""
    raw = dict(settings.engine_section("kubernetes"))
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
    # Distinct per database, so two masters sharing a namespace never touch each other's Jobs; without the
    # password, so rotating it does not orphan running Jobs (a moved database needs kubernetes.masterId).
    url = make_url(settings.database_url)
    where = f"{url.drivername}://{url.username or ''}@{url.host or ''}:{url.port or ''}/{url.database or ''}"
    default_id = "kt-" + hashlib.sha256(where.encode()).hexdigest()[:12]
    master_id = str(raw.get("masterId") or default_id)
    if not LABEL_VALUE_RE.match(master_id) or len(master_id) > 63:
        raise ConfigError(f"config.yaml kubernetes.masterId {master_id!r}: must be a label value (up to 63 "
                          "letters, digits, '-', '_', '.'; starting and ending with a letter or digit)")
    queue = raw.get("kueueQueue") or None
    if queue is not None and not _QUEUE_NAME.match(str(queue)):
        raise ConfigError(f"config.yaml kubernetes.kueueQueue {queue!r}: must name a Kueue LocalQueue (lowercase "
                          "letters, digits, '-' and '.', up to 63 characters); list them with `kubectl get localqueues`")
    mount_path = raw.get("resultsMountPath") or None
    if mount_path is not None and not str(mount_path).startswith("/"):
        raise ConfigError(f"config.yaml kubernetes.resultsMountPath {mount_path!r}: must be an absolute path, where "
                          "the master's own pod mounts the results claim")
    return KubernetesSettings(
        namespace=str(raw.get("namespace") or "default"),
        image=str(raw.get("image") or KubernetesSettings.image),
        master_url=str(raw.get("masterUrl") or master_url or "") or None,
        master_id=master_id,
        results_claim=str(raw.get("resultsClaim") or KubernetesSettings.results_claim),
        results_access_mode=_access_mode(raw.get("resultsAccessMode") or KubernetesSettings.results_access_mode,
                                         "resultsAccessMode"),
        results_storage_class=raw.get("resultsStorageClass") or None,
        results_size=_quantity(raw.get("resultsSize") or KubernetesSettings.results_size, "resultsSize"),
        results_mount_path=str(mount_path) if mount_path else None,
        kueue_queue=str(queue) if queue else None,
        image_pull_policy=raw.get("imagePullPolicy") or None,
        service_account=raw.get("serviceAccount") or None,
        tolerations=tuple(tolerations),
        priority_classes=tuple(sorted((int(v), str(k)) for k, v in classes.items())),
        volume_size=_quantity(raw.get("volumeSize") or KubernetesSettings.volume_size, "volumeSize"),
        storage_class=raw.get("storageClass") or None,
        volume_access_mode=_access_mode(raw.get("volumeAccessMode") or KubernetesSettings.volume_access_mode,
                                        "volumeAccessMode"),
    )


def _quantity(value: Any, field: str) -> str:
    try:
        parse_memory(value)
    except (QuantityError, TypeError, ValueError) as exc:
        raise ConfigError(f"config.yaml kubernetes.{field}: {exc}") from None
    return str(value)


def _access_mode(value: Any, field: str) -> str:
    if value not in ACCESS_MODES:
        raise ConfigError(f"config.yaml kubernetes.{field} {value!r}: must be one of {', '.join(ACCESS_MODES)} "
                          "(ReadWriteMany only where the storage class offers it, e.g. NFS or CephFS)")
    return str(value)
