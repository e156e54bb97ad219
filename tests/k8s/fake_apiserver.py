"""A stateful fake Kubernetes API server: kmock's ``KubernetesEmulator`` plus the gaps a real client notices.

Why this exists: the Kubernetes engine must be tested against the API *over HTTP*, through the official
``kubernetes`` client, without a cluster.  kmock's emulator already keeps objects in memory and serves
get/list/watch/create/patch/delete with ``Status`` errors (404, 409).  Where it differs from a real
API server in ways the client or the engine would notice, this subclass fills in, and only there:

* create: fills ``metadata`` (``generateName``, ``namespace``, ``uid``, ``creationTimestamp``,
  ``resourceVersion``), ``apiVersion``/``kind``, Job defaults (selector and ``job-name`` labels), checks the
  namespace exists, and answers **201** (kmock answers 200);
* errors carry the real ``reason`` (``AlreadyExists``, ``NotFound``, ``Conflict``...) and ``details``;
* list and watch honour ``labelSelector`` / ``fieldSelector`` (kmock ignores them), in one namespace or
  in all (``GET /api/v1/pods``);
* resourceVersions are one counter over all kinds, stamped when a change is committed (as etcd's
  revision), and every change is kept in a history, so a **watch** behaves like the real server's: from
  ``resourceVersion=N`` it replays exactly what happened after N (deletions included), then streams;
  without one (or ``0``) it starts with an ``ADDED`` per existing object; ``allowWatchBookmarks=true``
  gets a ``BOOKMARK`` every :attr:`FakeApiServer.bookmark_interval` seconds; ``timeoutSeconds`` ends it;
  an RV older than the compaction horizon answers the ``ERROR`` event with a ``410 Expired`` Status
  (a LIST with ``resourceVersionMatch=Exact``: HTTP 410).  :meth:`FakeApiServer.compact` moves the
  horizon past every RV handed out and ends the open watches, as an API server restart after an etcd
  compaction does, so tests can force the ``410`` path; the history is also trimmed past ``history_limit``;
* :attr:`FakeApiServer.request_counts` counts requests per (verb, resource), so tests can assert load;
* ``metrics.k8s.io/v1beta1`` pods (PodMetricsList) are served from :attr:`FakeApiServer.metrics_source`
  when it is set, else 404 as on a cluster without metrics-server;
* ``PUT`` (replace, with the resourceVersion precondition) and ``DELETE`` on a collection are served;
* ``/api/v1/namespaces[/{name}]`` works (kmock's path parser takes it for a namespace scope and fails);
  deleting a namespace deletes what is in it;
* delete answers a ``Status`` like the real server (pods: the pod);
* ``GET .../pods/{name}/log`` serves the log that the fake kubelet captured (text/plain, ``container``,
  ``tailLines``, ``limitBytes``, ``follow``), which kmock does not know.

Everything runs on the event loop of one background thread; other threads go through that loop.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import copy
import datetime as dt
import itertools
import json
import random
import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import aiobus, parsing
from kmock._internal.k8s import KubernetesObjectConflictError

from .matching import field_matcher, label_matcher

PODS = kmock.resource("", "v1", "pods")
NODES = kmock.resource("", "v1", "nodes")
NAMESPACES = kmock.resource("", "v1", "namespaces")
JOBS = kmock.resource("batch", "v1", "jobs")
SECRETS = kmock.resource("", "v1", "secrets")
SERVICES = kmock.resource("", "v1", "services")

#: plural -> (kind, namespaced) for the resources the engine may touch; all are declared for discovery.
KNOWN = {
    PODS: ("Pod", True), NODES: ("Node", False), NAMESPACES: ("Namespace", False), JOBS: ("Job", True),
    kmock.resource("", "v1", "events"): ("Event", True),
    kmock.resource("", "v1", "configmaps"): ("ConfigMap", True),
    SECRETS: ("Secret", True),
    SERVICES: ("Service", True),
    kmock.resource("", "v1", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    kmock.resource("batch", "v1", "cronjobs"): ("CronJob", True),
}
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses for generateName suffixes

#: (namespace, pod, container) -> (log file or None if not started, still running?)
LogSource = Callable[[str, str, str], tuple[Path | None, bool]]
#: namespace (None: all) -> the PodMetrics items a metrics-server would report.
MetricsSource = Callable[[str | None], list[dict[str, Any]]]
METRICS_PATH = re.compile(r"/apis/metrics\.k8s\.io/v1beta1(?:/namespaces/([^/]+))?/pods/?")


def now() -> str:
    """RFC 3339 at second precision, as the API server writes timestamps."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(length: int = 5) -> str:
    return "".join(random.choice(NAME_ALPHABET) for _ in range(length))


def kind_of(resource: kmock.resource) -> str:
    return KNOWN.get(resource, (resource.plural[:-1].capitalize(), True))[0]


def api_version_of(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else resource.version


def error(code: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=code, reason=reason, message=message, details=details or None)


def not_found(resource: kmock.resource, name: str | None) -> kmock.KubernetesError:
    qualified = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return error(404, "NotFound", f'{qualified} "{name}" not found', name=name, group=resource.group,
                 kind=resource.plural)


def expired(rv: int, horizon: int) -> kmock.KubernetesError:
    return error(410, "Expired", f"too old resource version: {rv} ({horizon})")


@dataclass(frozen=True)
class Change:
    """One committed change, as a watch from an older resourceVersion replays it."""
    rv: int
    resource: kmock.resource
    type: str  # ADDED, MODIFIED, DELETED
    object: dict[str, Any]  # a copy as it was then


class RecordingBus(aiobus.Bus):
    """kmock's event bus, which also hands every change to the server's history as it is published.

    Every write path (kmock's own create/patch/delete, and :meth:`FakeApiServer.add`/``mutate``/``remove``)
    publishes on a bus, so this is the one place where a change gets its resourceVersion and is recorded.
    """

    def __init__(self, record: Callable[[Any], None]) -> None:
        super().__init__()
        self._record = record

    async def put(self, *items: Any) -> None:
        for item in items:
            self._record(item)  # synchronously: no request sees the object between the write and its RV
        await super().put(*items)


class RecordingBuses(dict):
    def __init__(self, record: Callable[[kmock.resource, Any], None]) -> None:
        super().__init__()
        self._record = record

    def __missing__(self, resource: kmock.resource) -> RecordingBus:
        bus = self[resource] = RecordingBus(lambda event: self._record(resource, event))
        return bus


# ---------------------------------------------------------------- the server

@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesEmulator):
    log_source: LogSource | None = None
    #: PodMetrics for ``metrics.k8s.io``; None answers 404, as a cluster without metrics-server.
    metrics_source: MetricsSource | None = None
    #: Seconds between BOOKMARK events on watches that allow them (the real server: about a minute).
    bookmark_interval: float = 0.5
    #: Changes kept for watches from an older resourceVersion; past it the oldest are compacted (410).
    history_limit: int = 10_000
    closing: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    internal_errors: list[str] = attrs.field(factory=list, init=False)
    #: (verb, resource plural) -> requests served: list, watch, get, create, update, patch, delete, deletecollection.
    request_counts: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter, init=False)
    _rv: itertools.count = attrs.field(factory=lambda: itertools.count(1), init=False)
    _last_rv: int = attrs.field(default=0, init=False)
    _history: list[Change] = attrs.field(factory=list, init=False)
    _horizon: int = attrs.field(default=0, init=False)  # a watch from an RV below this gets 410
    _generation: int = attrs.field(default=0, init=False)  # bumped by compact(): open watches end
    _changed: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = RecordingBuses(self._record)
        for resource, (kind, namespaced) in KNOWN.items():
            self.resources[resource] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, singular=kind.lower(),
                verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})

    def next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion handed out (what a LIST answers now)."""
        return self._last_rv

    def _record(self, resource: kmock.resource, event: Any) -> None:
        """Commit a published change: stamp a new resourceVersion on the stored object, keep a copy."""
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict) or event.get("type") not in ("ADDED", "MODIFIED", "DELETED"):
            return
        # ``raw`` is a shallow copy: its metadata is the stored version's, so the stamp is the object's RV.
        obj.setdefault("metadata", {})["resourceVersion"] = rv = self.next_rv()
        self._history.append(Change(int(rv), resource, event["type"], copy.deepcopy(obj)))
        if len(self._history) > self.history_limit:
            dropped = self._history[: len(self._history) - self.history_limit * 9 // 10]
            del self._history[: len(dropped)]
            self._horizon = dropped[-1].rv
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def compact(self) -> int:
        """Forget all history and end every open watch: a watch or an Exact LIST from any resourceVersion
        handed out so far now gets ``410 Expired`` (an API server restarted after etcd compacted).
        Returns the new horizon."""
        self._horizon = int(self.next_rv())
        self._history.clear()
        self._generation += 1
        self._wake()
        return self._horizon

    def counted(self, verb: str, plural: str) -> int:
        """How many ``verb`` requests on ``plural`` (e.g. ``("list", "pods")``) were served so far."""
        return self.request_counts[(verb, plural)]

    # ---- helpers for the in-process controllers (call them on the server's loop)

    def get(self, resource: kmock.resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (resource, namespace, name)
        return None if key not in self.objects or self.objects[key].deleted else self.objects[key].raw

    def items(self, resource: kmock.resource) -> list[tuple[str | None, str, dict[str, Any]]]:
        return [(ns, name, obj.raw) for (res, ns, name), obj in list(self.objects.items())
                if res == resource and not obj.deleted]

    async def add(self, resource: kmock.resource, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Create an object as a POST would (metadata filled in, ADDED event); 409 if it exists."""
        body = copy.deepcopy(body)
        self._prepare_create(resource, namespace, body)
        key = (resource, namespace, body["metadata"]["name"])
        async with self._lock:
            if key in self.objects and not self.objects[key].deleted:
                raise KubernetesObjectConflictError()
            if key in self.objects:
                self.objects[key].create(body)
            else:
                self.objects[key] = body
            raw = self.objects[key].raw
            await self._buses[resource].put({"type": "ADDED", "object": raw})
        return raw

    async def mutate(self, resource: kmock.resource, namespace: str | None, name: str,
                     change: Callable[[dict[str, Any]], None]) -> dict[str, Any] | None:
        """Apply ``change`` to a copy of the object; store it as a new version (MODIFIED) unless nothing changed."""
        async with self._lock:
            key = (resource, namespace, name)
            if key not in self.objects or self.objects[key].deleted:
                return None
            obj = self.objects[key]
            new = copy.deepcopy(obj.raw)
            change(new)
            if new == obj.raw:
                return new
            new["metadata"]["resourceVersion"] = self.next_rv()
            obj.history.append(new)
            await self._buses[resource].put({"type": "MODIFIED", "object": obj.raw})
            return obj.raw

    async def remove(self, resource: kmock.resource, namespace: str | None, name: str) -> bool:
        async with self._lock:
            key = (resource, namespace, name)
            if key not in self.objects or self.objects[key].deleted:
                return False
            raw = copy.deepcopy(self.objects[key].raw)
            raw["metadata"]["resourceVersion"] = self.next_rv()
            self.objects[key].delete()
            await self._buses[resource].put({"type": "DELETED", "object": raw})
            return True

    # ---- request handling

    def _prepare_create(self, resource: kmock.resource, namespace: str | None, data: Any) -> None:
        if not isinstance(data, dict):
            raise error(400, "BadRequest", "the request body must be a JSON object")
        meta = data.get("metadata") or {}
        data["metadata"] = meta
        if meta.get("namespace") and namespace and meta["namespace"] != namespace:
            raise error(400, "BadRequest", "the namespace of the provided object does not match "
                                           "the namespace sent on the request")
        if namespace is not None and self.get(NAMESPACES, None, namespace) is None and resource != NAMESPACES:
            raise not_found(NAMESPACES, namespace)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise error(422, "Invalid", f"{kind_of(resource)} is invalid: metadata.name: Required value: "
                                            "name or generateName is required")
            while self.get(resource, namespace, name := meta["generateName"] + random_suffix()) is not None:
                pass
            meta["name"] = name
        if namespace is not None:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), resourceVersion=self.next_rv(), generation=1)
        data.setdefault("apiVersion", api_version_of(resource))
        data.setdefault("kind", kind_of(resource))
        if resource == NAMESPACES:
            data.setdefault("status", {"phase": "Active"})
        if resource == PODS:
            data.setdefault("status", {"phase": "Pending", "qosClass": "Burstable"})
        if resource == JOBS:
            spec = data.setdefault("spec", {})
            for key, value in (("backoffLimit", 6), ("completions", 1), ("parallelism", 1), ("suspend", False)):
                spec.setdefault(key, value)
            own = {"batch.kubernetes.io/controller-uid": meta["uid"], "controller-uid": meta["uid"],
                   "batch.kubernetes.io/job-name": meta["name"], "job-name": meta["name"]}
            template_meta = spec.setdefault("template", {}).get("metadata") or {}
            spec["template"]["metadata"] = template_meta
            template_meta["labels"] = {**(template_meta.get("labels") or {}), **own}
            spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}})
            data.setdefault("status", {})

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's path parser reads ".../namespaces/{x}/..." as a namespace scope, so it cannot address the
        # namespaces resource itself (it fails with a 500 on /api/v1/namespaces): parse those paths here.
        metrics = METRICS_PATH.fullmatch(raw_request.path)
        if metrics is not None and raw_request.method == "GET":
            return await self._serve_metrics(metrics[1])
        m = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?(?:/(status|finalize))?/?", raw_request.path)
        if m is None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        path = parsing.ParsedPath(group="", version="v1", plural="namespaces", name=m[1], subresource=m[2])
        method = kmock.method(raw_request.method)
        request = kmock.Request(
            id=len(self._requests), raw_request=raw_request, url=raw_request.url, method=method,
            params=dict(raw_request.query), headers=dict(raw_request.headers), cookies=dict(raw_request.cookies),
            data=data, body=body, text=body.decode(errors="replace"),
            action=parsing.guess_k8s(path, method, dict(raw_request.query)),
            resource=NAMESPACES, namespace=None, name=m[1], subresource=m[2])
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as exc:  # rendered as a Status, as kmock does
            return await self._render_error(exc)

    async def _serve_metrics(self, namespace: str | None) -> aiohttp.web.StreamResponse:
        self.request_counts[("list", "pods.metrics.k8s.io")] += 1
        if self.metrics_source is None:
            return await self._render_error(error(404, "NotFound", "the server could not find the requested "
                                                                   "resource"))
        return aiohttp.web.json_response({"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                                          "metadata": {}, "items": self.metrics_source(namespace)})

    @staticmethod
    def _verb(request: kmock.Request) -> str:
        if request.method == kmock.method.PUT:
            return "update"
        if request.method == kmock.method.PATCH:
            return "patch"
        if request.method == kmock.method.DELETE:
            return "delete" if request.name else "deletecollection"
        return {kmock.action.LIST: "list", kmock.action.WATCH: "watch", kmock.action.FETCH: "get",
                kmock.action.CREATE: "create"}.get(request.action, str(request.method).lower())

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None:
            return await super()._handle(request)
        self.request_counts[(self._verb(request), resource.plural)] += 1
        if request.method == kmock.method.GET and resource == PODS and request.subresource == "log":
            return await self._serve_log(request)
        if request.method == kmock.method.PUT and request.name:
            return await self._serve_replace(request)
        if request.method == kmock.method.DELETE and request.name is None:
            return await self._serve_delete_collection(request)
        if request.action == kmock.action.UPDATE:
            if not isinstance(request.data, dict):
                raise error(415, "UnsupportedMediaType", "the fake API server applies merge patches "
                                                         "(dict bodies) only, not JSON patches")
            request.data["metadata"] = {**(request.data.get("metadata") or {}), "resourceVersion": self.next_rv()}
        if request.action == kmock.action.CREATE:
            self._prepare_create(resource, request.namespace, request.data)
        try:
            response = await super()._handle(request)
        except KubernetesObjectConflictError:
            name = request.data["metadata"]["name"]
            qualified = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
            raise error(409, "AlreadyExists", f'{qualified} "{name}" already exists',
                        name=name, group=resource.group, kind=resource.plural) from None
        except kmock.KubernetesNotFoundError:
            raise not_found(resource, request.name) from None
        if request.action == kmock.action.CREATE and response.status == 200:
            response.set_status(201)
        if request.action == kmock.action.DELETE and resource == NAMESPACES:  # its content goes with it
            for (res, namespace, name), obj in list(self.objects.items()):
                if namespace == request.name and not obj.deleted:
                    await self.remove(res, namespace, name)
        if request.action == kmock.action.DELETE and resource != PODS and response.status == 200:
            return aiohttp.web.json_response({
                "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                "details": {"name": request.name, "group": resource.group, "kind": resource.plural}})
        return response

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            reason = exc.reason if exc.status != 404 or exc.reason == "NotFound" else "NotFound"
            body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                    "message": exc.message, "reason": reason, "code": exc.status}
            if exc.details:
                body["details"] = exc.details
            return aiohttp.web.json_response(body, status=exc.status)
        self.internal_errors.append("".join(traceback.format_exception(exc)))
        return await super()._render_error(exc)

    def _matcher(self, request: kmock.Request) -> Callable[[dict[str, Any]], bool]:
        labels = label_matcher(request.params.get("labelSelector", ""))
        fields = field_matcher(request.params.get("fieldSelector", ""))
        return lambda obj: labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj)

    def _in_scope(self, request: kmock.Request, namespace: str | None, name: str | None) -> bool:
        return ((request.namespace is None or namespace == request.namespace)
                and (request.name is None or name == request.name))

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        assert request.resource is not None
        match = self._matcher(request)
        wanted_rv = request.params.get("resourceVersion", "")
        if request.params.get("resourceVersionMatch") == "Exact" and wanted_rv.isdigit() \
                and int(wanted_rv) < self._horizon:
            raise expired(int(wanted_rv), self._horizon)
        items = [raw for ns, name, raw in self.items(request.resource)
                 if self._in_scope(request, ns, name) and match(raw)]
        return {"apiVersion": api_version_of(request.resource), "kind": kind_of(request.resource) + "List",
                "metadata": {"resourceVersion": str(self._last_rv)}, "items": items}

    async def _serve_watch(self, request: kmock.Request):  # type: ignore[override]
        """A watch as the real server streams it: replay after ``resourceVersion`` (or the current objects
        as ADDED without one), then changes; BOOKMARKs when allowed; 410 for a compacted RV."""
        resource = request.resource
        assert resource is not None
        match = self._matcher(request)
        asked = request.params.get("resourceVersion", "")
        timeout = float(request.params.get("timeoutSeconds") or 0)
        bookmarks = request.params.get("allowWatchBookmarks") == "true"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        generation = self._generation
        yield b""  # send the headers now

        def wanted(raw: dict[str, Any]) -> bool:
            meta = raw.get("metadata") or {}
            return self._in_scope(request, meta.get("namespace"), meta.get("name")) and match(raw)

        if asked.isdigit() and int(asked) > 0:
            seen = int(asked)
        else:  # "Get State and Start at Most Recent": the objects now, then what follows
            seen = self._last_rv
            for current in [copy.deepcopy(raw) for _, _, raw in self.items(resource) if wanted(raw)]:
                yield {"type": "ADDED", "object": current}
        next_bookmark = loop.time() + self.bookmark_interval
        while True:
            if seen < self._horizon:  # compacted before or while we streamed
                yield {"type": "ERROR", "object": {
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": expired(seen, self._horizon).message, "reason": "Expired", "code": 410}}
                return
            changed = self._changed  # taken before reading, so a change after the read wakes us
            batch = self._history[bisect.bisect_right(self._history, seen, key=lambda c: c.rv):]
            for change in batch:
                seen = change.rv
                if change.resource == resource and wanted(change.object):
                    yield {"type": change.type, "object": change.object}
            if batch:
                continue  # more may have come while those were sent
            if self.closing.is_set() or generation != self._generation:
                return
            now_ = loop.time()
            if deadline is not None and now_ >= deadline:
                return
            if bookmarks and now_ >= next_bookmark:
                # Nothing unsent since the scan above (no await in between): every change up to the newest
                # RV has been seen, and any later one gets a higher RV.
                seen = max(seen, self._last_rv)
                yield {"type": "BOOKMARK", "object": {"kind": kind_of(resource), "apiVersion": api_version_of(resource),
                                                      "metadata": {"resourceVersion": str(seen)}}}
                next_bookmark = now_ + self.bookmark_interval
                continue
            wait = min([0.2, *(t - now_ for t in (deadline, next_bookmark if bookmarks else None) if t is not None)])
            try:
                await asyncio.wait_for(changed.wait(), max(0.0, wait))
            except TimeoutError:
                pass

    async def _serve_replace(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource, body = request.resource, request.data
        assert resource is not None
        if not isinstance(body, dict):
            raise error(400, "BadRequest", "the request body must be a JSON object")
        old = self.get(resource, request.namespace, request.name or "")
        if old is None:
            raise not_found(resource, request.name)
        wanted_rv = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"].get("resourceVersion"):
            raise error(409, "Conflict", f'Operation cannot be fulfilled on {resource.plural} "{request.name}": '
                                         "the object has been modified; please apply your changes to the latest "
                                         "version and try again", name=request.name, kind=resource.plural)

        def replace(obj: dict[str, Any]) -> None:
            if request.subresource == "status":
                obj["status"] = body.get("status")
                return
            keep = {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "creationTimestamp")
                    if k in obj["metadata"]}
            status = obj.get("status")
            obj.clear()
            obj.update(copy.deepcopy(body))
            obj["metadata"] = {**(body.get("metadata") or {}), **keep}
            if status is not None:
                obj["status"] = status
        new = await self.mutate(resource, request.namespace, request.name or "", replace)
        if new is None:
            raise not_found(resource, request.name)
        return aiohttp.web.json_response(new)

    async def _serve_delete_collection(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        assert request.resource is not None
        match = self._matcher(request)
        for ns, name, raw in self.items(request.resource):
            if self._in_scope(request, ns, None) and match(raw):
                await self.remove(request.resource, ns, name)
        return aiohttp.web.json_response({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"})

    async def _serve_log(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        namespace, name = request.namespace or "", request.name or ""
        pod = self.get(PODS, namespace, name)
        if pod is None:
            raise not_found(PODS, name)
        mains = [c["name"] for c in pod["spec"].get("containers") or []]
        inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
        container = request.params.get("container") or (mains[0] if len(mains) == 1 else None)
        if container is None:
            raise error(400, "BadRequest", f"a container name must be specified for pod {name}, "
                                           f"choose one of: {mains} or one of the init containers: {inits}")
        if container not in mains + inits:
            raise error(400, "BadRequest", f"container {container} is not valid for pod {name}")
        path, running = self.log_source(namespace, name, container) if self.log_source else (None, False)
        if path is None or not path.exists():
            raise error(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                                           "ContainerCreating")
        tail = int(request.params["tailLines"]) if request.params.get("tailLines", "").isdigit() else None
        limit = int(request.params["limitBytes"]) if request.params.get("limitBytes", "").isdigit() else None
        data = path.read_bytes()
        offset = len(data)
        if tail is not None:
            data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
        if request.params.get("follow") != "true":
            return aiohttp.web.Response(body=data[:limit] if limit is not None else data, content_type="text/plain")
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
        assert request._raw_request is not None
        await response.prepare(request._raw_request)
        sent = 0
        while True:
            chunk = data[:limit - sent] if limit is not None else data
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
            if (limit is not None and sent >= limit) or self.closing.is_set():
                break
            if not data and not running:
                break
            await asyncio.sleep(0.02)
            _, running = self.log_source(namespace, name, container) if self.log_source else (None, False)
            with path.open("rb") as stream:
                stream.seek(offset)
                data = stream.read()
            offset += len(data)
            if self.get(PODS, namespace, name) is None:
                running = False
        await response.write_eof()
        return response
