"""One typed settings object, built once at start-up and passed down.

Sources, later wins: defaults < ``$KUBETRAIN_HOME/config.yaml`` < environment
variables < explicit arguments.  Nothing here runs at import time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from kubetrain.core.errors import ConfigError, SpecError
from kubetrain.core.fairshare import DEFAULT_HALF_LIFE_SECONDS
from kubetrain.core.identity import validate_team_name
from kubetrain.core.quantities import QuantityError, parse_cpu, parse_memory
from kubetrain.core.queues import PreemptionPolicy


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """How the embedded engine describes this machine to the planner."""

    name: str = ""  # empty: the host name
    labels: dict[str, str] = field(default_factory=dict)
    #: GPU device indices to offer; None means "discover through NVML".
    gpus: tuple[int, ...] | None = None
    #: Kept back for the OS and the master itself, so jobs cannot starve them.
    reserved_cpu_millis: int = 0
    reserved_memory_bytes: int = 256 * 2**20
    #: Declared capacity overrides (None: measured with psutil).
    cpu_millis: int | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Limits applied to every attempt on top of its resources."""

    #: Tasks (processes + threads) per attempt; stops fork bombs, leaves room for DataLoader workers.
    pids: int = 4096
    #: Seconds between SIGTERM and SIGKILL on cancel / deadline (Kubernetes' default is 30).
    grace_seconds: float = 10.0
    #: An attempt's log rotates at this size; the disk holds at most twice it per attempt.
    log_bytes: int = 64 * 2**20
    # -- what a caller may send the API (``limits:`` keys in parentheses); over a cap is a 413 ---------
    #: A job or experiment spec body (``specMax``): a spec is text, 1 MiB is tens of thousands of lines.
    spec_bytes: int = 2**20
    #: One metrics batch (``metricsMax``); the in-job SDK sends batches far smaller than this.
    metrics_bytes: int = 16 * 2**20
    #: One code snapshot upload (``snapshotMax``, ``KUBETRAIN_SNAPSHOT_MAX``, the CLI's own cap too).
    snapshot_bytes: int = 100 * 2**20
    #: Any other request body (``bodyMax``): volumes, reruns' params, user admin.
    body_bytes: int = 2**20
    #: What one snapshot may unpack to (``unpackMax``; default 10x ``snapshotMax``, at most 4 GiB),
    #: and how many entries (``unpackMaxFiles``): a gzip bomb stops here, not at a full disk.
    unpack_bytes: int = 1000 * 2**20
    unpack_files: int = 100_000
    #: Seconds a connection has to send a complete request head (``headerTimeout``): slowloris stops here.
    header_timeout_seconds: float = 10.0
    #: Seconds without a byte while a request body is still expected (``idleTimeout``).
    idle_timeout_seconds: float = 60.0
    #: Open connections at most (``maxConnections``); past it the oldest idle ones are closed first.
    max_connections: int = 2048
    # -- requests in progress at once per route class (``limits.concurrency.<class>``); past it a 503 ------
    # Small on purpose: the routes are Python under one GIL, so more worker threads add no throughput, only
    # latency, and starve the event loop that answers everything (bench B4-load: list 4/read 32/write 16
    # completed fewer requests, each slower, than these).
    #: Job, experiment and artifact listings: the slow kind, few at once, so they never crowd out the rest.
    concurrency_list: int = 2
    #: Every other GET (one job, metrics, nodes, whoami): the fast, frequent kind.
    concurrency_read: int = 8
    #: POST/PUT/DELETE (submits, cancels, metric batches, uploads): each takes the database's one write lock.
    concurrency_write: int = 4
    #: Logs and file downloads, which hold a worker thread for as long as they stream (``logs -f``: minutes),
    #: mostly asleep waiting for output.
    concurrency_stream: int = 64
    #: Milliseconds a request waits for a slot of its class before the 503 (``queueWaitMs``): long enough
    #: to ride out a burst, short enough that a refused caller hears so at once rather than timing out.
    queue_wait_ms: int = 50


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    """Whom jobs run as when the master is root (``security:`` and ``defaults:`` in config.yaml)."""

    #: Jobs submitted by root (or users mapped to uid 0) may run as root (``security.allowRootJobs``,
    #: ``KUBETRAIN_ALLOW_ROOT_JOBS=1``). Off: they run as ``run_as_user``, or are refused at submit.
    allow_root_jobs: bool = False
    #: The OS user (name or uid) for jobs whose submitter has no account here (``defaults.runAsUser``,
    #: ``KUBETRAIN_RUN_AS_USER``), e.g. ``nobody`` or a service account.
    run_as_user: str | None = None


#: Where the reconcile loop runs (``master.controller``, ``KUBETRAIN_CONTROLLER``); see server/controller.py.
CONTROLLER_LAYOUTS = ("process", "thread")


@dataclass(frozen=True, slots=True)
class ProcessSettings:
    """How the master uses the machine's cores (``master:`` in config.yaml); bench/README.md has the figures."""

    #: "process": the reconcile loop in a process of its own (default); "thread": in the API's process.
    controller: str = "process"
    #: API processes serving the same sockets (``master.apiWorkers``, ``KUBETRAIN_API_WORKERS``).
    api_workers: int = 1


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """When finished jobs leave the hot tables (``history:`` in config.yaml); see bench/README.md, "History is cheap"."""

    #: Seconds after its end that a job's attempts and events stay in the hot tables (``history.hotSeconds``,
    #: ``KUBETRAIN_HISTORY_HOT_SECONDS``); then they move to the archive tables, and get/list still show them.
    #: Three days: the jobs people look at (logs, reruns, a sweep's results) are the ones that ended this week.
    hot_seconds: float = 3 * 86400.0


@dataclass(frozen=True, slots=True)
class MonitoringSettings:
    """Usage accounting and the idle-GPU warning (``monitoring:`` in config.yaml; core/usage_accounting.py)."""

    #: Seconds between the controller's usage samples of running attempts (``monitoring.sampleSeconds``,
    #: ``KUBETRAIN_SAMPLE_SECONDS``); each costs a short CPU window per attempt and one transaction.
    sample_seconds: float = 10.0
    #: A job whose every GPU stays below this percent (``monitoring.idleGpu.utilization``,
    #: ``KUBETRAIN_IDLE_GPU_UTILIZATION``) for ``idle_gpu_seconds`` (``monitoring.idleGpu.minutes`` or
    #: ``.seconds``, ``KUBETRAIN_IDLE_GPU_SECONDS``) gets one IdleGPU warning and a mark in ``top``.
    idle_gpu_utilization: float = 5.0  # core/usage_accounting.py's IdleRule defaults (kept light: no pydantic here)
    idle_gpu_seconds: float = 30 * 60.0


#: The local master's usual TCP port (``port:``, ``KUBETRAIN_PORT``); unassigned by IANA, unlike 8080 or 8000.
DEFAULT_PORT = 8765


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    database_url: str
    host: str = "127.0.0.1"
    #: The master's TCP port: the same across restarts, so a URL written down (a notebook, KUBETRAIN_URL) keeps
    #: working.  When it is taken the master listens on a free one and says so (master.log, `server status`);
    #: 0: any free port.  The address in use is recorded under home/run/master.json.
    port: int = DEFAULT_PORT
    token: str | None = None
    url: str | None = None  # KUBETRAIN_URL: talk to this master, never auto-start
    #: Seconds between reconcile passes when nothing wakes the loop earlier.
    resync_seconds: float = 1.0
    node: NodeSettings = field(default_factory=NodeSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    #: What runs attempts: a name in the engine registry (``KUBETRAIN_ENGINE``, ``engine:``; see kubetrain.engines).
    engine: str = field(default_factory=lambda: _engine(None))
    #: Each engine's section of config.yaml (``<engine name>:``), read by that engine when it is chosen.
    engine_sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Queue order within a priority: round-robin over submitters (``scheduling: {fairShare: true}``,
    #: ``KUBETRAIN_FAIR_SHARE=1``) instead of strict submit order.
    fair_share: bool = False
    #: How fast past usage stops counting for fair share (``scheduling.halfLife``: 7d, 12h; core/fairshare.py).
    usage_half_life: float = DEFAULT_HALF_LIFE_SECONDS
    #: Each team's share of the cluster for fair share (``scheduling.shares: {ml: 2, infra: 1}``): a team's usage
    #: counts divided by it; a team not listed, and a user without a team, has share 1 (core/fairshare.py).
    team_shares: dict[str, float] = field(default_factory=dict)
    #: What a job in no queue may preempt (``scheduling.preemption``: never, lowerPriority, reclaimBorrowed);
    #: a queue's own ``preemption`` applies to its jobs (core/queues.py).
    default_preemption: PreemptionPolicy = PreemptionPolicy.NEVER
    security: SecuritySettings = field(default_factory=SecuritySettings)
    #: Host names (besides loopback and the bound address) the API answers to (``allowedHosts``,
    #: ``KUBETRAIN_ALLOWED_HOSTS=a,b``): any other ``Host`` header is refused, which stops DNS rebinding.
    allowed_hosts: tuple[str, ...] = ()
    processes: ProcessSettings = field(default_factory=ProcessSettings)
    history: HistorySettings = field(default_factory=HistorySettings)
    monitoring: MonitoringSettings = field(default_factory=MonitoringSettings)

    def engine_section(self, name: str) -> Mapping[str, Any]:
        """Engine ``name``'s section of config.yaml (empty when there is none)."""
        return self.engine_sections.get(name, {})

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def attempts_dir(self) -> Path:
        return self.home / "attempts"

    @property
    def volumes_dir(self) -> Path:
        return self.home / "volumes"

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def envs_dir(self) -> Path:
        return self.home / "envs"

    def with_overrides(self, **changes: Any) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _node_settings(raw: Mapping[str, Any]) -> NodeSettings:
    known = {"name", "labels", "gpus", "reservedCpu", "reservedMemory", "cpu", "memory"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"config.yaml node: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    try:
        gpus = raw.get("gpus")
        if isinstance(gpus, int):
            gpus = tuple(range(gpus))
        elif gpus is not None:
            gpus = tuple(int(g) for g in gpus)
        return NodeSettings(
            name=str(raw.get("name", "")),
            labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
            gpus=gpus,
            reserved_cpu_millis=parse_cpu(raw.get("reservedCpu", 0)),
            reserved_memory_bytes=parse_memory(raw.get("reservedMemory", "256Mi")),
            cpu_millis=parse_cpu(raw["cpu"]) if "cpu" in raw else None,
            memory_bytes=parse_memory(raw["memory"]) if "memory" in raw else None,
        )
    except (QuantityError, TypeError, ValueError) as exc:
        raise ConfigError(f"config.yaml node: {exc}") from None


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from config file and environment (``os.environ`` by default)."""
    env = os.environ if env is None else env
    home = Path(env.get("KUBETRAIN_HOME") or Path.home() / ".kubetrain").expanduser().absolute()
    config: dict[str, Any] = {}
    config_file = home / "config.yaml"
    if config_file.is_file():
        try:
            config = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{config_file}: malformed YAML: {exc}") from None
        except PermissionError:
            config = {}  # another user's master: its config is its own; a client needs none of it
        if not isinstance(config, dict):
            raise ConfigError(f"{config_file}: must be a mapping")
    node = _node_settings(config.get("node") or {})
    if env.get("KUBETRAIN_NODE_LABELS"):
        labels = dict(node.labels)
        for pair in env["KUBETRAIN_NODE_LABELS"].split(","):
            key, _, value = pair.partition("=")
            labels[key.strip()] = value.strip()
        node = replace(node, labels=labels)
    if env.get("KUBETRAIN_GPUS") is not None and env.get("KUBETRAIN_GPUS") != "":
        text = env["KUBETRAIN_GPUS"]
        node = replace(node, gpus=tuple(range(int(text))) if text.isdigit() else tuple(int(x) for x in text.split(",")))
    limits_raw = config.get("limits") or {}
    default_limits = LimitSettings()
    limits = LimitSettings(
        pids=int(env.get("KUBETRAIN_PIDS_MAX") or limits_raw.get("pids", default_limits.pids)),
        grace_seconds=float(
            env.get("KUBETRAIN_GRACE_SECONDS") or limits_raw.get("graceSeconds", default_limits.grace_seconds)
        ),
        log_bytes=parse_memory(env.get("KUBETRAIN_LOG_MAX") or limits_raw.get("logMax", default_limits.log_bytes)),
        **_request_limits(env, limits_raw),
    )
    settings = Settings(
        home=home,
        database_url=env.get("KUBETRAIN_DATABASE_URL") or config.get("databaseUrl") or f"sqlite:///{home / 'kubetrain.db'}",
        host=env.get("KUBETRAIN_HOST") or config.get("host") or "127.0.0.1",
        port=int(env.get("KUBETRAIN_PORT") or (DEFAULT_PORT if config.get("port") is None else config["port"])),
        token=env.get("KUBETRAIN_TOKEN") or config.get("token"),
        url=env.get("KUBETRAIN_URL") or None,
        node=node,
        limits=limits,
        engine=_engine(env.get("KUBETRAIN_ENGINE") or config.get("engine")),
        engine_sections=_engine_sections(config),
        fair_share=_fair_share(env.get("KUBETRAIN_FAIR_SHARE"), _mapping(config.get("scheduling"), "scheduling")),
        usage_half_life=_half_life(_mapping(config.get("scheduling"), "scheduling")),
        team_shares=_team_shares(_mapping(config.get("scheduling"), "scheduling")),
        default_preemption=_preemption(_mapping(config.get("scheduling"), "scheduling")),
        security=_security(env, _mapping(config.get("security"), "security"), _mapping(config.get("defaults"), "defaults")),
        allowed_hosts=_allowed_hosts(env.get("KUBETRAIN_ALLOWED_HOSTS"), config.get("allowedHosts")),
        processes=_processes(env, _mapping(config.get("master"), "master")),
        history=_history(env.get("KUBETRAIN_HISTORY_HOT_SECONDS"), _mapping(config.get("history"), "history")),
        monitoring=_monitoring(env, _mapping(config.get("monitoring"), "monitoring")),
    )
    return settings.with_overrides(**overrides)


def _monitoring(env: Mapping[str, str], raw: Mapping[str, Any]) -> MonitoringSettings:
    """``monitoring: {sampleSeconds, idleGpu: {utilization, minutes | seconds}}``, each overridable by a variable."""
    unknown = set(raw) - {"sampleSeconds", "idleGpu"}
    if unknown:
        raise ConfigError(f"config.yaml monitoring: unknown field(s) {sorted(unknown)}; known: ['idleGpu', "
                          "'sampleSeconds']")
    idle = _mapping(raw.get("idleGpu"), "monitoring.idleGpu")
    unknown = set(idle) - {"utilization", "minutes", "seconds"}
    if unknown:
        raise ConfigError(f"config.yaml monitoring.idleGpu: unknown field(s) {sorted(unknown)}; known: ['minutes', "
                          "'seconds', 'utilization']")
    if "minutes" in idle and "seconds" in idle:
        raise ConfigError("config.yaml monitoring.idleGpu: give minutes or seconds, not both")
    defaults = MonitoringSettings()

    def number(variable: str, key: str, configured: Any, low: float, high: float, fix: str) -> float:
        text = env.get(variable)
        source, value = (variable, text) if text not in (None, "") else (f"config.yaml monitoring.{key}", configured)
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            result = float(value)
        except (TypeError, ValueError):
            result = float("nan")
        if not low <= result <= high:
            raise ConfigError(f"{source}: {value!r} is not {fix}")
        return result

    sample = number("KUBETRAIN_SAMPLE_SECONDS", "sampleSeconds", raw.get("sampleSeconds", defaults.sample_seconds),
                    0.1, 86400, "a number of seconds from 0.1 to 86400; use e.g. 10 (the default)")
    utilization = number("KUBETRAIN_IDLE_GPU_UTILIZATION", "idleGpu.utilization",
                         idle.get("utilization", defaults.idle_gpu_utilization), 0, 100,
                         "a percent from 0 to 100; use e.g. 5 (the default; 0 turns the warning off)")
    if "seconds" in idle:
        key, configured, scale = "idleGpu.seconds", idle["seconds"], 1.0
    else:
        key, configured, scale = "idleGpu.minutes", idle.get("minutes", defaults.idle_gpu_seconds / 60), 60.0
    if env.get("KUBETRAIN_IDLE_GPU_SECONDS") not in (None, ""):
        key, scale = "idleGpu.seconds", 1.0
    window = number("KUBETRAIN_IDLE_GPU_SECONDS", key, configured, 0, 366 * 86400 / scale,
                    "a positive duration; use e.g. minutes: 30 (the default), or seconds: 60") * scale
    return MonitoringSettings(sample_seconds=sample, idle_gpu_utilization=utilization, idle_gpu_seconds=window)


def _history(variable: str | None, raw: Mapping[str, Any]) -> HistorySettings:
    unknown = set(raw) - {"hotSeconds"}
    if unknown:
        raise ConfigError(f"config.yaml history: unknown field(s) {sorted(unknown)}; known: ['hotSeconds']")
    source, value = ("KUBETRAIN_HISTORY_HOT_SECONDS", variable) if variable not in (None, "") else (
        "config.yaml history.hotSeconds", raw.get("hotSeconds", HistorySettings().hot_seconds))
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{source}: {value!r} is not a number of seconds; use e.g. 259200 (three days) for how "
                          "long finished jobs stay in the hot tables")
    return HistorySettings(hot_seconds=seconds)


def _processes(env: Mapping[str, str], raw: Mapping[str, Any]) -> ProcessSettings:
    unknown = set(raw) - {"controller", "apiWorkers"}
    if unknown:
        raise ConfigError(f"config.yaml master: unknown field(s) {sorted(unknown)}; known: ['apiWorkers', 'controller']")
    controller = env.get("KUBETRAIN_CONTROLLER") or raw.get("controller") or "process"
    if controller not in CONTROLLER_LAYOUTS:
        raise ConfigError(f"controller {controller!r} (KUBETRAIN_CONTROLLER or master.controller) is unknown; "
                          f"use one of {', '.join(CONTROLLER_LAYOUTS)}")
    workers = env.get("KUBETRAIN_API_WORKERS") or raw.get("apiWorkers") or 1
    try:
        count = int(workers)
    except (TypeError, ValueError):
        count = 0
    if not 1 <= count <= 64 or isinstance(workers, bool):
        raise ConfigError(f"API workers {workers!r} (KUBETRAIN_API_WORKERS or master.apiWorkers): "
                          "use a whole number from 1 to 64")
    return ProcessSettings(controller=controller, api_workers=count)


def _half_life(scheduling: Mapping[str, Any]) -> float:
    """``scheduling.halfLife``: seconds, or a duration like 7d, 12h, 30m."""
    value = scheduling.get("halfLife", "7d")
    text = str(value).strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        seconds = float(number) * units[unit]
    except ValueError:
        seconds = -1.0
    if isinstance(value, bool) or not 60 <= seconds <= 366 * 86400:
        raise ConfigError(f"config.yaml scheduling.halfLife: {value!r} is not a duration from 1m to 366d; "
                          "use e.g. 7d (Slurm's default) or 12h")
    return seconds


def _team_shares(scheduling: Mapping[str, Any]) -> dict[str, float]:
    """``scheduling.shares``: team name -> a positive weight (a team's usage counts divided by it)."""
    raw = scheduling.get("shares")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config.yaml scheduling.shares: {raw!r} is not a mapping; write one weight per team, "
                          "e.g. shares: {{ml: 2, infra: 1}}")
    shares: dict[str, float] = {}
    for team, value in raw.items():
        try:
            validate_team_name(team, "team")
        except SpecError:
            raise ConfigError(f"config.yaml scheduling.shares: {team!r} is not a team name; use 1-63 lower-case "
                              "letters, digits and '-', starting and ending with a letter or digit") from None
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            weight = float(value)
        except (TypeError, ValueError):
            weight = -1.0
        if not 0 < weight < float("inf"):
            raise ConfigError(f"config.yaml scheduling.shares.{team}: {value!r} is not a positive number; use e.g. "
                              "2 (twice the share of a team not listed, which has 1)")
        shares[team] = weight
    return shares


def _preemption(scheduling: Mapping[str, Any]) -> PreemptionPolicy:
    """``scheduling.preemption``: what a job in no queue may preempt (core/queues.py; default never)."""
    value = scheduling.get("preemption", PreemptionPolicy.NEVER.value)
    try:
        return PreemptionPolicy(value)
    except ValueError:
        raise ConfigError(f"config.yaml scheduling.preemption: {value!r} is not a policy; use one of "
                          f"{', '.join(p.value for p in PreemptionPolicy)}") from None


#: The keys of ``scheduling:`` in config.yaml.
SCHEDULING_KEYS = ("fairShare", "halfLife", "preemption", "shares")


def _fair_share(variable: str | None, scheduling: Mapping[str, Any]) -> bool:
    unknown = set(scheduling) - set(SCHEDULING_KEYS)
    if unknown:
        raise ConfigError(f"config.yaml scheduling: unknown field(s) {sorted(unknown)}; "
                          f"known: {list(SCHEDULING_KEYS)}")
    if variable not in (None, ""):
        if variable not in ("0", "1", "true", "false"):
            raise ConfigError(f"KUBETRAIN_FAIR_SHARE={variable!r}: use 1 (round-robin over submitters) or 0")
        return variable in ("1", "true")
    value = scheduling.get("fairShare", False)
    if not isinstance(value, bool):
        raise ConfigError(f"config.yaml scheduling.fairShare: {value!r} is not true or false")
    return value


def _flag(text: str, name: str) -> bool:
    if text not in ("0", "1", "true", "false"):
        raise ConfigError(f"{name}={text!r}: use 1 or 0")
    return text in ("1", "true")


def _security(env: Mapping[str, str], security: Mapping[str, Any], defaults: Mapping[str, Any]) -> SecuritySettings:
    for section, raw, known in (("security", security, {"allowRootJobs"}), ("defaults", defaults, {"runAsUser"})):
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"config.yaml {section}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    allow = security.get("allowRootJobs", False)
    if env.get("KUBETRAIN_ALLOW_ROOT_JOBS") not in (None, ""):
        allow = _flag(env["KUBETRAIN_ALLOW_ROOT_JOBS"], "KUBETRAIN_ALLOW_ROOT_JOBS")
    if not isinstance(allow, bool):
        raise ConfigError(f"config.yaml security.allowRootJobs: {allow!r} is not true or false")
    run_as = env.get("KUBETRAIN_RUN_AS_USER") or defaults.get("runAsUser")
    return SecuritySettings(allow_root_jobs=allow, run_as_user=None if run_as in (None, "") else str(run_as))


def _engine_sections(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The config.yaml sections named like an engine of the registry."""
    from kubetrain.engines import engine_names  # the registry only: it imports no engine

    return {name: _mapping(config[name], name) for name in engine_names() if config.get(name) is not None}


def _engine(name: str | None) -> str:
    """The configured engine (the registry's default when none is), checked against the registry's names."""
    from kubetrain.engines import DEFAULT_ENGINE, engine_names  # the registry only: it imports no engine

    name = name or DEFAULT_ENGINE
    if name not in engine_names():
        raise ConfigError(f"engine {name!r} is unknown; use one of {', '.join(engine_names())} "
                          "(KUBETRAIN_ENGINE or engine: in config.yaml)")
    return name


def _mapping(value: Any, section: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config.yaml {section}: must be a mapping, got {type(value).__name__}")
    return value


#: The ``limits:`` keys about what callers send: (field, config key, variable, unit).
_REQUEST_LIMITS = (
    ("spec_bytes", "specMax", "KUBETRAIN_SPEC_MAX", "bytes"),
    ("metrics_bytes", "metricsMax", "KUBETRAIN_METRICS_MAX", "bytes"),
    ("snapshot_bytes", "snapshotMax", "KUBETRAIN_SNAPSHOT_MAX", "bytes"),
    ("body_bytes", "bodyMax", "KUBETRAIN_BODY_MAX", "bytes"),
    ("unpack_bytes", "unpackMax", "KUBETRAIN_UNPACK_MAX", "bytes"),
    ("unpack_files", "unpackMaxFiles", "KUBETRAIN_UNPACK_MAX_FILES", "count"),
    ("max_connections", "maxConnections", "KUBETRAIN_MAX_CONNECTIONS", "count"),
    ("header_timeout_seconds", "headerTimeout", "KUBETRAIN_HEADER_TIMEOUT", "seconds"),
    ("idle_timeout_seconds", "idleTimeout", "KUBETRAIN_IDLE_TIMEOUT", "seconds"),
    ("concurrency_list", "concurrency.list", "KUBETRAIN_CONCURRENCY_LIST", "count"),
    ("concurrency_read", "concurrency.read", "KUBETRAIN_CONCURRENCY_READ", "count"),
    ("concurrency_write", "concurrency.write", "KUBETRAIN_CONCURRENCY_WRITE", "count"),
    ("concurrency_stream", "concurrency.stream", "KUBETRAIN_CONCURRENCY_STREAM", "count"),
    ("queue_wait_ms", "queueWaitMs", "KUBETRAIN_QUEUE_WAIT_MS", "count"),
)
#: The route classes of ``limits.concurrency`` (server/backpressure.py sorts every route into one).
CONCURRENCY_CLASSES = ("list", "read", "write", "stream")
_UNITS = {"bytes": "a size such as 1Mi or 100Mi", "count": "a whole number such as 2048",
          "seconds": "a number of seconds such as 10"}


def _request_limits(env: Mapping[str, str], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The request caps and timeouts that are set (variable over config.yaml); the rest keep their defaults."""
    values: dict[str, Any] = {}
    concurrency = _mapping(raw.get("concurrency"), "limits.concurrency")
    unknown = set(concurrency) - set(CONCURRENCY_CLASSES)
    if unknown:
        raise ConfigError(f"config.yaml limits.concurrency: unknown class(es) {sorted(unknown)}; "
                          f"known: {list(CONCURRENCY_CLASSES)}")
    for name, key, variable, unit in _REQUEST_LIMITS:
        text = env.get(variable)
        section, _, leaf = key.rpartition(".")
        configured = concurrency.get(leaf) if section == "concurrency" else raw.get(key)
        source, value = (variable, text) if text not in (None, "") else (f"config.yaml limits.{key}", configured)
        if value is None:
            continue
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            number = parse_memory(value) if unit == "bytes" else int(value) if unit == "count" else float(value)
        except (QuantityError, TypeError, ValueError):
            raise ConfigError(f"{source}: {value!r} is not {_UNITS[unit]}") from None
        if not number > 0:
            raise ConfigError(f"{source}: {value!r} must be more than 0 (it is a cap, not a switch)")
        values[name] = number
    if "unpack_bytes" not in values:  # follows the snapshot cap: 10x a snapshot, never past 4 GiB by default
        values["unpack_bytes"] = min(10 * values.get("snapshot_bytes", LimitSettings().snapshot_bytes), 4 * 2**30)
    return values


def _allowed_hosts(variable: str | None, configured: Any) -> tuple[str, ...]:
    """``KUBETRAIN_ALLOWED_HOSTS`` (comma-separated) or ``allowedHosts`` (a list): lower-case names, ports dropped."""
    if variable not in (None, ""):
        source, items = "KUBETRAIN_ALLOWED_HOSTS", variable.split(",")
    elif configured is None:
        return ()
    elif isinstance(configured, (list, str)):
        source, items = "config.yaml allowedHosts", configured.split(",") if isinstance(configured, str) else configured
    else:
        raise ConfigError(f"config.yaml allowedHosts: must be a list of host names, got {type(configured).__name__}")
    hosts: list[str] = []
    for item in items:
        text = str(item).strip().lower()
        if not text:
            continue
        match = re.fullmatch(r"\[([0-9a-f:.]+)\](?::\d+)?|([a-z0-9._-]+)(?::\d+)?|([0-9a-f:]+:[0-9a-f:.]*)", text)
        if match is None:
            raise ConfigError(f"{source}: {item!r} is not a host name; write it as it appears in URLs, without "
                              "scheme or path, e.g. kubetrain.example.com or 10.0.0.5")
        hosts.append(next(group for group in match.groups() if group))
    return tuple(hosts)
