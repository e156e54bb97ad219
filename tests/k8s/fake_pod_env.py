"""A container's environment as a node would give it, for the fake kubelet that runs containers as local processes.

Why a module of its own: a real pod gets more than its ``env`` values, from parts of the cluster the fake
otherwise lacks, and a gang (an Indexed Job's pods finding each other) needs all of them:

* ``valueFrom.fieldRef`` (the kubelet's downward API): ``metadata.annotations['k']``, ``metadata.labels['k']``,
  ``metadata.name``/``namespace``/``uid``, ``spec.nodeName``/``serviceAccountName``, ``status.podIP``/``hostIP``;
  a missing annotation or label is the empty string, as on a node;
* **cluster DNS**: ``<hostname>.<subdomain>`` (optionally ``.<namespace>[.svc[.cluster.local]]``) names a pod
  when a headless Service called ``<subdomain>`` selects it.  Every pod of the fake runs on this host's
  network, so such a name resolves to 127.0.0.1: an env value that is exactly such a name becomes
  ``127.0.0.1`` when the process starts (a value naming no such pod stays as it is, and fails as it would);
* **a network per pod**: on a node, each pod has its own ports; here all share the host's, so the torch
  rendezvous port (``MASTER_PORT``/``PET_MASTER_PORT``) of a container whose ``MASTER_ADDR`` named one of
  the fake's pods is moved to a free host port, the same one for every pod that names that address;
* **volume mounts**: the fake cannot mount, so an env value that is a path under a container's
  ``mountPath`` is turned into the host folder behind that volume: an ``emptyDir`` lives in the pod's
  folder (gone with the pod), a ``persistentVolumeClaim`` in ``<fake>/claims/<namespace>/<claim>`` (kept
  across pods, so a checkpoint outlives an attempt as on a real claim), ``subPath`` included.  A claim that
  does not exist never gets here: the fake scheduler keeps such a pod ``Pending`` (fake_kubelet.py).
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

from .matching import label_matcher

LOOPBACK = "127.0.0.1"
FIELD_MAP = re.compile(r"^metadata\.(annotations|labels)\['([^']*)'\]$")
RENDEZVOUS_PORTS = ("MASTER_PORT", "PET_MASTER_PORT")


def field_value(pod: dict[str, Any], path: str, namespace: str | None) -> str:
    """``valueFrom.fieldRef.fieldPath`` resolved against the pod, as the kubelet does."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    found = FIELD_MAP.match(path)
    if found:
        return str((meta.get(found[1]) or {}).get(found[2], ""))
    simple = {"metadata.name": meta.get("name"), "metadata.namespace": namespace, "metadata.uid": meta.get("uid"),
              "spec.nodeName": spec.get("nodeName"), "spec.serviceAccountName": spec.get("serviceAccountName"),
              "status.podIP": LOOPBACK, "status.hostIP": LOOPBACK}
    if path not in simple:
        raise OSError(f"the fake kubelet does not resolve fieldRef {path!r}")
    return str(simple[path] or "")


def resolves(pods: list[dict[str, Any]], services: dict[str, dict[str, Any]], namespace: str | None, value: str) -> bool:
    """Is ``value`` the DNS name of a pod in ``namespace`` (hostname.subdomain, through a headless Service)?"""
    parts = value.split(".")
    if len(parts) < 2 or parts[2:] not in ([], [namespace], [namespace, "svc"], [namespace, "svc", "cluster", "local"]):
        return False
    host, subdomain = parts[0], parts[1]
    service = services.get(subdomain)
    spec = (service or {}).get("spec") or {}
    if service is None or spec.get("clusterIP") != "None":
        return False
    selector = spec.get("selector") or {}
    match = label_matcher(",".join(f"{k}={v}" for k, v in selector.items()))
    return bool(selector) and any(
        (pod.get("spec") or {}).get("hostname") == host and (pod.get("spec") or {}).get("subdomain") == subdomain
        and match((pod.get("metadata") or {}).get("labels") or {}) for pod in pods)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def mount_folders(pod: dict[str, Any], spec: dict[str, Any], pod_folder: Path, fake_folder: Path,
                  namespace: str | None) -> list[tuple[str, Path]]:
    """(mountPath, host folder) for the container's volume mounts, longest mountPath first (folders made)."""
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    out = []
    for mount in spec.get("volumeMounts") or []:
        volume = volumes.get(mount.get("name")) or {}
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            base = fake_folder / "claims" / str(namespace) / claim
        elif "emptyDir" in volume:
            base = pod_folder / "volumes" / str(mount.get("name"))
        else:
            continue
        folder = base / mount["subPath"] if mount.get("subPath") else base
        folder.mkdir(parents=True, exist_ok=True)
        out.append((mount["mountPath"].rstrip("/") or "/", folder))
    return sorted(out, key=lambda item: -len(item[0]))


def through_mounts(value: str, mounts: list[tuple[str, Path]]) -> str:
    """A path inside a mount, as the host folder behind it; any other value as it is."""
    for mount_path, folder in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(folder) + value[len(mount_path):]
    return value
