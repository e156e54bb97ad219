"""``kubetrain run --array 0-9%2 -- CMD``: a job array, submitted as an Experiment of algorithm ``array``.

The flags build the Job as for any ``run``; its spec becomes the template of
an experiment whose one parameter is the index (core/arrays.py).  So the
tasks are trials: ``describe experiment``, ``compare``, ``cancel experiment``
and ``sweep --watch``'s progress work on an array as on any experiment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: An experiment's most trials at once (ExperimentBody.parallelism): an array without %K runs that many.
MAX_PARALLELISM = 1000

if TYPE_CHECKING:
    from kubetrain.core.experiments import ExperimentSpec
    from kubetrain.core.specs import JobSpec


def array_experiment(spec: JobSpec, text: str) -> ExperimentSpec:
    """The Experiment that runs ``spec`` once per index of ``--array text``."""
    from kubetrain.core.arrays import INDEX_PARAM, parse_array
    from kubetrain.core.experiments import validate_experiment

    parsed = parse_array(text)
    metadata: dict[str, Any] = {"labels": dict(spec.metadata.labels)}
    if spec.metadata.name:
        metadata["name"] = spec.metadata.name
    else:
        metadata["generateName"] = "array-"
    return validate_experiment({
        "apiVersion": "kubetrain/v1", "kind": "Experiment", "metadata": metadata,
        "spec": {
            "template": spec.to_document()["spec"],
            "parameters": [{"name": INDEX_PARAM, "type": "categorical", "values": list(parsed.indices)}],
            "algorithm": "array",
            "maxTrials": len(parsed.indices),
            "parallelism": min(parsed.parallelism, MAX_PARALLELISM),  # no %K: as many at once as an experiment may
        },
    })
