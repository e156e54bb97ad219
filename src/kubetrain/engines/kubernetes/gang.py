"""Distributed jobs (``spec.replicas`` > 1) on Kubernetes: the names and variables of an Indexed Job's pods.

Pure, like ``manifests.py`` (which renders the objects from these).  Why this shape, as Kubeflow Trainer
and JobSet do it, with nothing installed in the cluster:

* **One Indexed Job** (``completionMode: Indexed``, ``parallelism = completions = N``): the Job
  controller gives each pod its index (the ``batch.kubernetes.io/job-completion-index`` annotation) and
  the stable hostname ``<job>-<index>``; ``backoffLimit: 0``, so one replica failing fails the Job (the
  master retries the whole gang as its next attempt, on its own budget).
* **A headless Service** per attempt (``clusterIP: None``), named by the pods' ``subdomain``: cluster DNS
  then resolves ``<job>-0.<service>``, the index-0 pod, which is ``MASTER_ADDR`` for everyone.  It
  publishes pods that are not Ready yet, so the rendezvous does not wait for readiness.
* **One pod template for every replica**: what differs per replica is only its index, read by each pod
  from its own annotation (``valueFrom.fieldRef``); every other variable of core/distributed.py is a constant.
"""

from __future__ import annotations

from typing import Any

from kubetrain.core.distributed import (
    DEFAULT_RENDEZVOUS_PORT,
    processes_per_replica,
    replica_variables,
)
from kubetrain.core.specs import JobBody

#: Set by the Job controller on each pod of an Indexed Job (annotation and, since 1.28, label).
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
#: The label the Job controller puts on its pods: the Service selects the attempt's pods by it.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
INDEX_FIELD = f"metadata.annotations['{COMPLETION_INDEX}']"
#: The variables whose value is the replica's index (the rest of replica_variables is the same for all).
INDEXED_VARIABLES = ("KUBETRAIN_REPLICA", "NODE_RANK", "PET_NODE_RANK", "RANK")
#: Attempt numbers a gang's names leave room for (``<job>-<attempt>-<index>`` is a pod's hostname: 63 at most).
ATTEMPT_DIGITS = 4


def service_of(job_object: str) -> str:
    """The headless Service of a gang's Job: always ``kt-<object>`` (a Service name must start with a letter, and
    a prefix only some names got would let job ``kt-7a`` squat the Service of job ``7a``)."""
    return f"kt-{job_object}"


def master_addr(job_object: str) -> str:
    """The index-0 pod's DNS name within the namespace: ``<hostname>.<subdomain>``."""
    return f"{job_object}-0.{service_of(job_object)}"


def rendezvous_port(body: JobBody) -> int:
    """``MASTER_PORT``: each pod has a network of its own, so torch's customary port unless the spec names one."""
    return (body.distributed.rendezvous_port if body.distributed else None) or DEFAULT_RENDEZVOUS_PORT


def longest_job_name(replicas: int) -> int:
    """The longest job name whose gang names stay DNS labels: hostname ``<job>-<attempt>-<index>``,
    Service ``kt-<job>-<attempt>``, for attempts up to :data:`ATTEMPT_DIGITS` digits."""
    return 63 - 1 - ATTEMPT_DIGITS - max(1 + len(str(replicas - 1)), len("kt-"))


def gang_variables(body: JobBody, job_object: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Each replica's variables (core/distributed.py): the constants, and the env entries read from the pod's index."""
    nproc = processes_per_replica(body.distributed, body.resources.gpu)
    variables = replica_variables(replica=0, replicas=body.replicas, master_addr=master_addr(job_object),
                                  master_port=rendezvous_port(body), nproc=nproc)
    from_index = [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": INDEX_FIELD}}}
                  for name in INDEXED_VARIABLES if name in variables]
    constants = {k: v for k, v in variables.items() if k not in INDEXED_VARIABLES}
    return constants, from_index


def make_indexed(job_spec: dict[str, Any], pod: dict[str, Any], replicas: int, job_object: str) -> None:
    """Turn a one-pod Job spec into the gang's Indexed Job (in place): N pods at once, each on the Service's subdomain."""
    job_spec.update(completionMode="Indexed", completions=replicas, parallelism=replicas)
    pod["subdomain"] = service_of(job_object)
