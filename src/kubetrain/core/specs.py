"""The Job spec: defined once, strict at the edge, shared by CLI, SDK, API and store.

Users write it as YAML (``apiVersion: kubetrain/v1``, ``kind: Job``) or as CLI
flags; the API receives the same structure as JSON.  Unknown fields are errors
(a typo in a resource name must never be silently ignored), quantities are
checked with Kubernetes rules, and every error names the field, the value and
the fix.  Stored specs are read back with the same model.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal, Union

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from kubetrain.core.dependencies import MAX_DEPENDENCIES, Dependency
from kubetrain.core.distributed import MAX_REPLICAS, Distributed
from kubetrain.core.queues import QUEUE_NAME_RE
from kubetrain.core.errors import SpecError
from kubetrain.core.notifications import Notifications
from kubetrain.core.retries import RetryPolicy
from kubetrain.core.strict import StrictModel, explain_errors
from kubetrain.core.quantities import QuantityError, format_cpu, parse_cpu, parse_memory
from kubetrain.core.selectors import (
    Requirement,
    SelectorError,
    format_selector,
    parse_selector,
    selector_from_mapping,
)

API_VERSION = "kubetrain/v1"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
PARAM_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
LABEL_KEY_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
MAX_DEADLINE_SECONDS = 366 * 24 * 3600
ParamValue = Union[str, int, float, bool, None, list[Any], dict[str, Any]]


def _check_finite(value: Any, path: str, depth: int = 0) -> None:
    """NaN and infinities are not JSON: refuse them instead of storing what PostgreSQL rejects."""
    if depth > 32:
        raise ValueError(f"{path} nests deeper than 32 levels, the deepest kubetrain stores; flatten it, "
                         "e.g. as 'model.depth: 3' keys")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path} is {value!r}; params must be finite numbers, strings, lists or mappings")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_finite(item, f"{path}[{index}]", depth + 1)


def check_name(value: str, field: str = "metadata.name") -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. digits-lr01)"
        )
    return value


class Resources(StrictModel):
    """What one attempt may use; enforced as limits (requests == limits)."""

    cpu: str | int | float = Field(default="1", description="cores (2, 0.5) or millicores (500m)")
    memory: str | int = Field(default="2Gi", description="bytes or a quantity (512Mi, 4Gi)")
    gpu: int = Field(default=0, description="whole GPUs, placed by device index")

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _not_bool(cls, value: Any, info: ValidationInfo) -> Any:
        # YAML reads yes/no/on/true as booleans, which pydantic would coerce to 1.
        example = "500m or 2" if info.field_name == "cpu" else "512Mi or 4Gi"
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a quantity; use e.g. {example}")
        if not isinstance(value, (str, int, float)):
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "..."
            raise ValueError(f"got {shown}, which is not a quantity; use a number or text, e.g. {example}")
        if info.field_name == "memory" and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not a whole number of bytes; use a unit, e.g. 1536Mi or 1.5Gi")
            return int(value)
        return value

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, value: Any) -> str:
        try:
            millis = parse_cpu(value)
        except QuantityError as exc:
            raise ValueError(f"{exc}") from None
        if millis == 0:
            raise ValueError(f"{value!r} is zero; a job needs some CPU, e.g. 500m or 1")
        return format_cpu(millis)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: Any) -> str:
        try:
            num = parse_memory(value)
        except QuantityError as exc:
            raise ValueError(f"{exc}") from None
        if num < 4 * 2**20:
            raise ValueError(f"{value!r} is below 4Mi, too little to start a process; use e.g. 512Mi")
        return str(value)

    @field_validator("gpu", mode="before")
    @classmethod
    def _gpu(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            else:
                raise ValueError(f"{value!r} is not a whole number of GPUs; use 0, 1, 2...")
        if value < 0:
            raise ValueError(f"{value} is negative; use 0 or more GPUs")
        if value > 1024:
            raise ValueError(f"{value} GPUs is more than any node has")
        return value

    @property
    def cpu_millis(self) -> int:
        return parse_cpu(self.cpu)

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory)


class EnvVar(StrictModel):
    name: str
    value: str = ""


_SECRET_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SECRET_KEY_RE = re.compile(r"^[A-Za-z0-9._-]+$")
PYTHON_VERSION_RE = re.compile(r"^3\.\d{1,2}$")


class SecretKeyRef(StrictModel):
    """One key of a named secret (``kubetrain secret create``; a Kubernetes Secret on that engine)."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._-]+$")

    @field_validator("name", "key", mode="before")
    @classmethod
    def _words(cls, value: Any, info: ValidationInfo) -> Any:
        # The same rules as the patterns above (kept for the API schema), said in words.
        if not isinstance(value, str):
            return value
        if info.field_name == "name" and not (len(value) <= 63 and _SECRET_NAME_RE.match(value)):
            raise ValueError(f"{value!r} is not a secret name: use up to 63 lowercase letters, digits and '-', "
                             "starting and ending with a letter or digit (see kubetrain secret ls)")
        if info.field_name == "key" and not (len(value) <= 253 and _SECRET_KEY_RE.match(value)):
            raise ValueError(f"{value!r} is not a secret key: use up to 253 letters, digits, '.', '_' and '-'")
        return value


def _split_secret_env(data: Any) -> Any:
    """Kubernetes' ``env: [{name, valueFrom: {secretKeyRef: {name, key}}}]`` -> ``secretEnv: {NAME: ref}``.

    The value itself never enters the spec: the master resolves the reference
    when it launches an attempt, so ``describe``, the API and the store hold
    only the secret's name and key.
    """
    if not isinstance(data, dict) or not isinstance(data.get("env"), list):
        return data
    plain, secret = [], dict(data.get("secretEnv") or {})
    for index, item in enumerate(data["env"]):
        if isinstance(item, dict) and "valueFrom" in item:
            source = item.get("valueFrom")
            extra = set(item) - {"name", "valueFrom"}
            if extra or not isinstance(source, dict) or set(source) != {"secretKeyRef"}:
                raise ValueError(f"env[{index}]: valueFrom supports only {{secretKeyRef: {{name, key}}}} "
                                 "(and no value beside it)")
            name = item.get("name")
            if not isinstance(name, str):
                raise ValueError(f"env[{index}].name is required")
            secret[name] = source["secretKeyRef"]
        else:
            plain.append(item)
    return {**data, "env": plain, "secretEnv": secret}


SNAPSHOT_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_relative_path(value: str, field: str) -> str:
    """A path inside a volume or snapshot: relative, normalised, never escaping upwards."""
    if not isinstance(value, str) or "\x00" in value or value.startswith("/") or "\\" in value:
        raise ValueError(f"{field} {value!r} must be a relative path like 'runs/exp1'")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ValueError(f"{field} {value!r} must not contain '..'; it would leave its volume")
    return "/".join(parts)


class VolumeMount(StrictModel):
    """A named volume mounted into the job (a PersistentVolumeClaim on Kubernetes)."""

    name: str
    mount_path: str = Field(alias="mountPath")
    read_only: bool = Field(default=False, alias="readOnly")
    sub_path: str | None = Field(default=None, alias="subPath")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "volume name")

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value or ".." in value.split("/") or len(value) > 1024:
            raise ValueError(f"mountPath {value!r} must be an absolute path without '..', e.g. /data")
        # Compare (and keep) the normal form: "/etc/.", "//etc" and "/./etc" are all /etc.
        normal = "/" + "/".join(p for p in value.split("/") if p not in ("", "."))
        if normal in ("/", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/lib", "/sbin"):
            raise ValueError(f"mountPath {value!r} would hide a system folder; use e.g. /data or /mnt/NAME")
        return normal

    @field_validator("sub_path")
    @classmethod
    def _sub_path(cls, value: str | None) -> str | None:
        return None if value is None else check_relative_path(value, "subPath")


class Environment(StrictModel):
    """A pinned Python environment, built once per content hash and shared by every job that asks."""

    python: str | None = Field(default=None, pattern=r"^3\.\d{1,2}$")
    requirements: list[str] = Field(default_factory=list, max_length=1000)
    requirements_file: str | None = Field(default=None, alias="requirementsFile")
    #: A token that asks for a new build of an environment that was built, or failed, before (``--rebuild``
    #: writes a fresh one): built again once per token, so one sweep's trials still share one build.
    rebuild: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")

    @field_validator("python", mode="before")
    @classmethod
    def _python(cls, value: Any) -> Any:
        # The pattern above stays for the API schema; this says the same in words, first.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise ValueError(f"got the number {value!r}; quote the version, e.g. python: \"3.11\" "
                             "(YAML reads 3.10 as the number 3.1)")
        if isinstance(value, str) and not PYTHON_VERSION_RE.match(value):
            raise ValueError(f"{value!r} is not a Python version of the form 3.N, e.g. \"3.11\"")
        return value

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.strip() or item.strip().startswith("-") or "\n" in item or len(item) > 512:
                raise ValueError(f"requirement {item!r} is not a package spec like 'numpy==2.1.0' (no pip options)")
        return value

    @field_validator("requirements_file")
    @classmethod
    def _file(cls, value: str | None) -> str | None:
        return None if value is None else check_relative_path(value, "requirementsFile")

    @model_validator(mode="after")
    def _one_source(self) -> "Environment":
        if self.requirements and self.requirements_file:
            raise ValueError("give requirements or requirementsFile, not both")
        return self


class Metadata(StrictModel):
    name: str | None = None
    #: Kubernetes' generateName: a prefix; the master appends a random suffix.
    generate_name: str | None = Field(default=None, alias="generateName")
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value)

    @field_validator("generate_name")
    @classmethod
    def _generate_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > 52 or not re.match(r"^[a-z0-9]([-a-z0-9]*)$", value):
            raise ValueError(
                f"{value!r} is not a valid generateName prefix: up to 52 lowercase letters, digits and '-', "
                "e.g. digits-"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 64:
            raise ValueError(f"{len(value)} labels; at most 64 are allowed")
        for key, val in value.items():
            if not LABEL_KEY_RE.match(key):
                raise ValueError(f"label key {key!r} is invalid; use letters, digits, '-', '_', '.'")
            if not isinstance(val, str) or not LABEL_VALUE_RE.match(val):
                raise ValueError(f"label {key}={val!r} has an invalid value; use up to 63 letters, digits, '-', '_', '.'")
        return value


class JobBody(StrictModel):
    """The ``spec:`` part of a Job: what to run and what it may use."""

    command: list[str] = Field(min_length=1, max_length=4096)
    args: list[str] = Field(default_factory=list, max_length=4096)
    #: The code snapshot (uploaded by the CLI) the job runs in; workingDir is then relative to it.
    snapshot: str | None = None
    working_dir: str | None = Field(default=None, alias="workingDir")
    env: dict[str, str] = Field(default_factory=dict)
    #: Variables taken from secrets at launch (``env[].valueFrom.secretKeyRef`` lands here).
    secret_env: dict[str, SecretKeyRef] = Field(default_factory=dict, alias="secretEnv", max_length=256)
    params: dict[str, ParamValue] = Field(default_factory=dict)
    #: Per replica: a job of N replicas asks for N × these.
    resources: Resources = Field(default_factory=Resources)
    #: Copies of the command started together and stopped together (see core/distributed.py).
    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    distributed: Distributed | None = None
    #: Jobs this one waits for (see core/dependencies.py); ``kubetrain run --after NAME``.
    depends_on: list[Dependency] = Field(default_factory=list, alias="dependsOn", max_length=MAX_DEPENDENCIES)
    selector: str = ""
    priority: int = Field(default=0, ge=-1000, le=1000)
    #: The queue whose quota the job counts against (core/queues.py); none given: the master picks one at
    #: submit and writes it here (``kubetrain run --queue``, ``kubetrain queue ls``).
    queue: str | None = Field(default=None, max_length=63)
    active_deadline_seconds: int | None = Field(
        default=None, alias="activeDeadlineSeconds", gt=0, le=MAX_DEADLINE_SECONDS
    )
    #: As Kubernetes' Job: the master deletes the finished job (records, attempt folders; not its outputs) this
    #: many seconds after it ended.
    ttl_seconds_after_finished: int | None = Field(default=None, alias="ttlSecondsAfterFinished", ge=0,
                                                   le=MAX_DEADLINE_SECONDS)
    shell: bool = Field(default=False, description="run command through /bin/sh -c (off: argv)")
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy, alias="retryPolicy")
    volumes: list[VolumeMount] = Field(default_factory=list, max_length=32)
    environment: Environment | None = None
    image: str | None = Field(default=None, max_length=512)
    #: A webhook POSTed to when the job ends (core/notifications.py); none: the owner's default, if any.
    notifications: Notifications | None = None

    @model_validator(mode="before")
    @classmethod
    def _secret_refs(cls, data: Any) -> Any:
        return _split_secret_env(data)

    @field_validator("queue", mode="before")
    @classmethod
    def _queue(cls, value: Any) -> Any:
        if value is not None and (not isinstance(value, str) or not QUEUE_NAME_RE.match(value)):
            raise ValueError(f"{value!r} is not a queue name: use 1-63 lowercase letters, digits and '-', starting "
                             "and ending with a letter or digit (kubetrain queue ls lists the queues)")
        return value

    @field_validator("replicas", mode="before")
    @classmethod
    def _replicas(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{value!r} is not a whole number of replicas; use 1, 2, 4...")
        if not 1 <= value <= MAX_REPLICAS:
            raise ValueError(f"{value} replicas is outside 1..{MAX_REPLICAS}; use e.g. replicas: 4")
        return value

    @model_validator(mode="after")
    def _paths(self) -> "JobBody":
        paths = [v.mount_path for v in self.volumes]
        if len(set(paths)) != len(paths):
            shared = next(p for p in paths if paths.count(p) > 1)
            raise ValueError(f"volumes: two volumes are mounted at {shared}; give each its own mountPath")
        named = [d.job for d in self.depends_on]
        if len(set(named)) != len(named):
            twice = next(n for n in named if named.count(n) > 1)
            raise ValueError(f"dependsOn: job {twice!r} is named twice; give each job once, with one condition")
        for key in self.secret_env:
            if not ENV_NAME_RE.match(key) or key.startswith("KUBETRAIN_"):
                raise ValueError(f"secretEnv name {key!r} is invalid or reserved; use letters, digits and '_'")
            if key in self.env:
                raise ValueError(f"env {key!r} is given both as a value and from a secret; keep one")
        return self

    @field_validator("command", "args")
    @classmethod
    def _argv(cls, value: list[str]) -> list[str]:
        for item in value:
            if "\x00" in item:
                raise ValueError("an argument contains a NUL byte")
            if len(item) > 131072:
                raise ValueError("an argument is longer than 128 KiB")
        return value

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, value: str | None) -> str | None:
        if value is not None and not SNAPSHOT_RE.match(value):
            raise ValueError(f"{value!r} is not a snapshot id (sha256:<64 hex digits>)")
        return value

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if "\x00" in value:
            raise ValueError("workingDir contains a NUL byte")
        if info.data.get("snapshot"):
            if value.startswith("/"):
                raise ValueError(f"{value!r}: with a code snapshot, workingDir is relative to the snapshot")
            return check_relative_path(value, "workingDir") or "."
        if not value.startswith("/"):
            raise ValueError(f"{value!r} is not an absolute path; the CLI resolves relative paths for you")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> dict[str, str]:
        # Accept the Kubernetes list form [{name, value}] as well as a mapping.
        if isinstance(value, list):
            out: dict[str, str] = {}
            for item in value:
                if not isinstance(item, dict):
                    raise ValueError("env list items must be {name: ..., value: ...}")
                var = EnvVar.model_validate(item)
                out[var.name] = var.value
            value = out
        if not isinstance(value, dict):
            raise ValueError("env must be a mapping NAME: value or a list of {name, value}")
        checked: dict[str, str] = {}
        for key, val in value.items():
            if not isinstance(key, str) or not ENV_NAME_RE.match(key):
                raise ValueError(f"env name {key!r} is invalid; use letters, digits and '_'")
            if key.startswith("KUBETRAIN_"):
                raise ValueError(f"env name {key!r} is reserved for kubetrain; pick another name")
            if isinstance(val, bool) or not isinstance(val, (str, int, float)):
                raise ValueError(f"env {key}: value must be a string, got {type(val).__name__}")
            text = str(val)
            if "\x00" in text:
                raise ValueError(f"env {key}: value contains a NUL byte")
            checked[key] = text
        return checked

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > 1024:
            raise ValueError(f"{len(value)} params; at most 1024 are allowed")
        _check_finite(value, "params")
        for key in value:
            if not PARAM_KEY_RE.match(key):
                raise ValueError(
                    f"param name {key!r} is invalid; start with a letter or '_', then letters, digits, '_', '.', '-'"
                )
        return value

    @field_validator("selector", mode="before")
    @classmethod
    def _selector(cls, value: Any) -> str:
        try:
            if value is None:
                return ""
            if isinstance(value, dict):
                return format_selector(selector_from_mapping(value))
            if not isinstance(value, str):
                raise ValueError("selector must be a string like 'gpu-type=a100' or a mapping")
            return format_selector(parse_selector(value))
        except SelectorError as exc:
            raise ValueError(str(exc)) from None

    @property
    def requirements(self) -> tuple[Requirement, ...]:
        return parse_selector(self.selector)

    @property
    def argv(self) -> list[str]:
        return [*self.command, *self.args]


class JobSpec(StrictModel):
    """A whole Job document."""

    api_version: Literal["kubetrain/v1"] = Field(default=API_VERSION, alias="apiVersion")
    kind: Literal["Job"] = "Job"
    metadata: Metadata = Field(default_factory=Metadata)
    spec: JobBody

    def with_name(self, name: str) -> "JobSpec":
        return self.model_copy(update={"metadata": self.metadata.model_copy(update={"name": name})})

    def to_document(self) -> dict[str, Any]:
        """The JSON/YAML form users write (camelCase, defaults included)."""
        return self.model_dump(mode="json", by_alias=True)


def format_validation_error(exc: ValidationError, *, lines: dict[tuple, int] | None = None,
                            model: type[BaseModel] | None = None, document: Any = None) -> SpecError:
    """Turn pydantic's errors into one SpecError naming field, value and fix (see :func:`explain_errors`)."""
    return explain_errors(exc.errors(include_url=False), model=model, lines=lines, document=document)


def validate_document(model: type[StrictModel], kind: str, document: Any, *,
                      lines: dict[tuple, int] | None = None) -> Any:
    """Validate one parsed document (YAML or JSON) against ``model``; errors become one SpecError."""
    if not isinstance(document, dict):
        raise SpecError(f"a {kind} document must be a mapping, got {type(document).__name__}; write key: value "
                        f"lines, e.g. apiVersion: kubetrain/v1, kind: {kind}, metadata: {{name: ...}}, spec: ...")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise format_validation_error(exc, lines=lines, model=model, document=document) from None


def validate_job(document: Any, *, lines: dict[tuple, int] | None = None) -> JobSpec:
    """Validate a Job document (already parsed from YAML or JSON)."""
    return validate_document(JobSpec, "Job", document, lines=lines)
