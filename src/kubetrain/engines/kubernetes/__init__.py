"""The Kubernetes engine: one batch/v1 Job per attempt; the cluster runs them, this master records them.

Its settings are the ``kubernetes:`` section of config.yaml and the
``KUBETRAIN_K8S_*`` variables (see ``engine.kubernetes_settings``).  The
engine, and the kubernetes client with it, is imported only when the registry
builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubetrain.engines.kubernetes.engine import KubernetesEngine
    from kubetrain.settings import Settings


def build_engine(settings: Settings, *, master_url: str | None) -> KubernetesEngine:
    """The engine for ``engine: kubernetes``.

    ``master_url`` is ignored: it is where *this machine's* jobs reach the
    master (often loopback), which pods cannot use; they reach it at
    ``kubernetes.masterUrl`` (``KUBETRAIN_K8S_MASTER_URL``).
    """
    from kubetrain.engines.kubernetes.engine import build_engine as build

    return build(settings, master_url=None)
