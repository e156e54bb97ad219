"""The environment variables every job sees, whatever engine runs it.

One definition, so that training code reads the same names on the embedded
engine and on Kubernetes: the SDK (``kubetrain.params()``, ``report()``,
``output_dir()``) depends on nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from kubetrain.core.arrays import INDEX_LABEL
from kubetrain.core.attempts import LaunchOrder
from kubetrain.core.specs import JobSpec

#: What a job inherits from the environment of the process that starts it, where that is the master
#: (the embedded engine): the search path, locale, time zone and terminal type.  Nothing else: the
#: master's environment holds its tokens, database URL and cloud credentials.
INHERITED_VARIABLES = frozenset({"PATH", "LANG", "LANGUAGE", "TZ", "TERM"})


def inherited_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed part of ``environ`` (:data:`INHERITED_VARIABLES` and every ``LC_*``)."""
    return {k: v for k, v in environ.items() if k in INHERITED_VARIABLES or k.startswith("LC_")}


def param_variable(key: str) -> str:
    """``lr`` -> ``KUBETRAIN_PARAM_LR``; ``model.depth`` -> ``KUBETRAIN_PARAM_MODEL_DEPTH``."""
    return "KUBETRAIN_PARAM_" + "".join(c if c.isalnum() else "_" for c in key).upper()


def job_variables(order: LaunchOrder, spec: JobSpec, *, attempt_dir: str, output_dir: str, master_url: str | None,
                  gpus: str | None, volumes: Mapping[str, str] | None = None) -> dict[str, str]:
    """The job's own variables, the user's ``env`` first so that ours win on a clash.

    ``gpus`` is what ``CUDA_VISIBLE_DEVICES`` must say: device indices on the
    embedded engine (``""``: none); on Kubernetes the device plugin sets it, so ``None`` leaves it out.
    """
    params = spec.spec.params
    env = dict(spec.spec.env)
    env.update({
        "KUBETRAIN_JOB": order.job,
        "KUBETRAIN_JOB_TOKEN": order.token,
        "KUBETRAIN_ATTEMPT": str(order.number),
        "KUBETRAIN_NODE": order.node,
        "KUBETRAIN_PARAMS": json.dumps(params),
        "KUBETRAIN_ATTEMPT_DIR": attempt_dir,
        "KUBETRAIN_OUTPUT_DIR": output_dir,
        "KUBETRAIN_CHECKPOINT_DIR": f"{output_dir.rstrip('/')}/checkpoints",
        "PYTHONUNBUFFERED": spec.spec.env.get("PYTHONUNBUFFERED", "1"),
    })
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus
        env["NVIDIA_VISIBLE_DEVICES"] = gpus or "void"  # "" hides every GPU, for containers too
    env.update(volumes or {})
    if master_url:
        env["KUBETRAIN_MASTER_URL"] = master_url
    index = spec.metadata.labels.get(INDEX_LABEL)
    if index is not None:  # a task of a job array (core/arrays.py), as Slurm's SLURM_ARRAY_TASK_ID
        env["KUBETRAIN_ARRAY_INDEX"] = index
    for key, value in params.items():
        env[param_variable(key)] = value if isinstance(value, str) else json.dumps(value)
    return env
