"""Turning CLI flags and YAML files into Job documents (validated by the one spec model).

Imports are light on purpose: ``kubetrain run`` builds its document here on the fast path
(:mod:`kubetrain.cli.quick`), before pydantic or PyYAML are loaded; the spec models load only to
validate.
"""

from __future__ import annotations

import re
from pathlib import Path

from kubetrain.core.errors import SpecError

TYPE_CHECKING = False  # typing itself costs milliseconds to import; annotations are strings here (PEP 563)
if TYPE_CHECKING:
    from typing import Any

    from kubetrain.core.experiments import ExperimentSpec
    from kubetrain.core.specs import JobSpec

_DURATION = re.compile(r"^(\d+)(s|m|h|d)?$")


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} lr=0.01")
        out[key.strip()] = value
    return out


def parse_param_value(text: str) -> Any:
    """``0.01`` -> float, ``5`` -> int, ``true`` -> bool, ``[1,2]`` -> list; anything else stays text."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
        return value
    return text


def parse_volume(text: str) -> dict[str, Any]:
    """``NAME:MOUNTPATH[:ro]`` -> a volumes entry."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        raise SpecError(f"--volume {text!r}: use NAME:MOUNTPATH or NAME:MOUNTPATH:ro, e.g. --volume shared:/data:ro")
    return {"name": parts[0], "mountPath": parts[1], "readOnly": len(parts) == 3 and parts[2] == "ro"}


_CONDITIONS = {"succeeded": "Succeeded", "ok": "Succeeded", "failed": "Failed", "notok": "Failed",
               "finished": "Finished", "any": "Finished"}


def parse_after(text: str) -> dict[str, str]:
    """``NAME`` or ``NAME:CONDITION`` (succeeded | failed | finished; Slurm's ok | notok | any too) ->
    a ``dependsOn`` entry."""
    name, _, condition = text.partition(":")
    if not name or (condition and condition.lower() not in _CONDITIONS):
        raise SpecError(f"--after {text!r}: use NAME or NAME:CONDITION with CONDITION one of succeeded, failed, "
                        "finished, e.g. --after prep or --after prep:finished")
    return {"job": name, "condition": _CONDITIONS[condition.lower()] if condition else "Succeeded"}


def parse_duration(text: str, *, flag: str = "--deadline") -> int:
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0 and flag != "--deadline":
        raise SpecError(f"{flag} {text!r}: use seconds or a duration like 90, 30m, 2h, 1d")
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[match.group(2)]


def spec_from_flags(**flags: Any) -> JobSpec:
    """The validated Job of ``kubetrain run``'s flags (those of :func:`job_document`)."""
    from kubetrain.core.specs import validate_job

    return validate_job(job_document(**flags))


def job_document(
    *, command: list[str], name: str | None, cpu: str | None, memory: str | None, gpu: int | None,
    params: list[str], env: list[str], labels: list[str], selector: str | None, priority: int | None,
    deadline: str | None, workdir: str | None, shell: bool, retries: int | None = None,
    volumes: list[str] = (), replicas: int | None = None, after: list[str] = (), queue: str | None = None,
) -> dict[str, Any]:
    """The Job document of ``kubetrain run``'s flags, not yet validated (the master validates it again)."""
    if not command:
        raise SpecError("no command given; put it after --, e.g. kubetrain run -- python train.py")
    resources: dict[str, Any] = {}
    if cpu is not None:
        resources["cpu"] = cpu
    if memory is not None:
        resources["memory"] = memory
    if gpu is not None:
        resources["gpu"] = gpu
    body: dict[str, Any] = {
        "command": command,
        "workingDir": str(Path(workdir or ".").absolute()),
        "params": {k: parse_param_value(v) for k, v in parse_pairs(params, "-p").items()},
        "env": parse_pairs(env, "-e"),
        "resources": resources,
        "shell": shell,
    }
    if selector:
        body["selector"] = selector
    if priority is not None:
        body["priority"] = priority
    if deadline:
        body["activeDeadlineSeconds"] = parse_duration(deadline)
    if retries is not None:
        body["retryPolicy"] = {"maxRetries": retries}
    if volumes:
        body["volumes"] = [parse_volume(v) for v in volumes]
    if replicas is not None:
        body["replicas"] = replicas
    if after:
        body["dependsOn"] = [parse_after(a) for a in after]
    if queue is not None:
        body["queue"] = queue
    return {"apiVersion": "kubetrain/v1", "kind": "Job",
            "metadata": {"labels": parse_pairs(labels, "--label"), **({"name": name} if name else {})},
            "spec": body}


def _resolve_working_dir(body: dict[str, Any], base: Path) -> None:
    # A relative workingDir means "relative to this file", like kubectl -k paths.
    working = body.get("workingDir")
    if working is None or (isinstance(working, str) and not working.startswith("/")):
        body["workingDir"] = str((base / (working or ".")).resolve())


def specs_from_file(path: str) -> list[JobSpec | ExperimentSpec]:
    """Read and validate every Job/Experiment document in a YAML file; nothing is submitted if one is bad."""
    from kubetrain.core.documents import load_yaml_documents
    from kubetrain.core.experiments import validate_experiment
    from kubetrain.core.specs import validate_job

    file = Path(path)
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    specs = []
    for index, (document, lines) in enumerate(load_yaml_documents(text, source=path)):
        kind = document.get("kind") if isinstance(document, dict) else None
        body = document.get("spec") if isinstance(document, dict) else None
        if kind == "Experiment" and isinstance(body, dict) and isinstance(body.get("template"), dict):
            _resolve_working_dir(body["template"], file.parent)
        elif isinstance(body, dict):
            _resolve_working_dir(body, file.parent)
        try:
            if kind == "Experiment":
                specs.append(validate_experiment(document, lines=lines))
            else:
                specs.append(validate_job(document, lines=lines))
        except SpecError as exc:
            where = f"{path}" + (f" (document {index + 1})" if index else "")
            raise SpecError(f"{where}: {exc.message}", details=exc.details) from None
    return specs


def with_rebuild(spec: JobSpec | ExperimentSpec, token: str) -> JobSpec | ExperimentSpec:
    """``spec`` asking for a new build of its environment (``--rebuild``): a fresh ``environment.rebuild`` token.

    One token for the whole submit, so an experiment's trials still share one build; a spec without an
    environment is returned as it is."""
    document = spec.to_document()
    body = document["spec"]["template"] if document.get("kind") == "Experiment" else document["spec"]
    if not body.get("environment"):
        return spec
    body["environment"]["rebuild"] = token
    return type(spec).model_validate(document)


def rebuild_token() -> str:
    import time

    return f"r{time.time_ns()}"
