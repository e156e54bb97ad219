"""A stateful fake Kubernetes API server: kmock's ``KubernetesEmulator`` plus the gaps a real client notices.

Why this exists: the Kubernetes engine must be tested against the API *over HTTP*, through the official
``kubernetes`` client, without a cluster.  kmock's emulator already keeps objects in memory and serves
get/list/watch/create/patch/delete with ``Status`` errors (404, 409).  Where it differs from a real
API server in ways the client or the engine would notice, this subclass fills in, and only there:

* create: fills ``metadata`` (``generateName``, ``namespace``, ``uid``, ``creationTimestamp``,
  ``resourceVersion``), ``apiVersion``/``kind``, Job defaults (selector and ``job-name`` labels), checks the
  namespace exists, and answers **201** (kmock answers 200);
* errors carry the real ``reason`` (``AlreadyExists``, ``NotFound``, ``Conflict``...) and ``details``;
* list and watch honour ``labelSelector`` / ``fieldSelector`` (kmock ignores them); watch honours
  ``timeoutSeconds`` and ``resourceVersion``, and ends when the server stops (else aiohttp waits 60 s);
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
import copy
import datetime as dt
import itertools
import json
import random
import re
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
from kmock._internal import parsing
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


# ---------------------------------------------------------------- the server

@attrs.define(kw_only=True)
class FakeApiServer(kmock.KubernetesEmulator):
    log_source: LogSource | None = None
    closing: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    internal_errors: list[str] = attrs.field(factory=list, init=False)
    _rv: itertools.count = attrs.field(factory=lambda: itertools.count(1), init=False)
    _last_rv: int = attrs.field(default=0, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for resource, (kind, namespaced) in KNOWN.items():
            self.resources[resource] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, singular=kind.lower(),
                verbs={"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"})

    def next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

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

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        resource = request.resource
        if resource is None or resource.plural is None:
            return await super()._handle(request)
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
        items = [raw for ns, name, raw in self.items(request.resource)
                 if self._in_scope(request, ns, name) and match(raw)]
        return {"apiVersion": api_version_of(request.resource), "kind": kind_of(request.resource) + "List",
                "metadata": {"resourceVersion": str(self._last_rv)}, "items": items}

    async def _serve_watch(self, request: kmock.Request):  # type: ignore[override]
        assert request.resource is not None
        match = self._matcher(request)
        since = int(request.params["resourceVersion"]) if request.params.get("resourceVersion", "").isdigit() else 0
        timeout = float(request.params.get("timeoutSeconds") or 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout > 0 else None
        yield b""  # send the headers now

        def wanted(raw: dict[str, Any]) -> bool:
            meta = raw.get("metadata") or {}
            return self._in_scope(request, meta.get("namespace"), meta.get("name")) and match(raw)

        bus = self._buses[request.resource]
        marker = await bus.mark()  # before the snapshot, so that nothing falls in between
        try:
            for _, _, raw in self.items(request.resource):  # "since": a rough cut by resourceVersion
                if wanted(raw) and int(raw["metadata"].get("resourceVersion") or 0) > since:
                    yield {"type": "ADDED", "object": raw}
            while not self.closing.is_set() and (deadline is None or loop.time() < deadline):
                wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - loop.time()))
                try:
                    event = await asyncio.wait_for(bus.get(since=marker), wait)
                except TimeoutError:
                    continue
                if wanted(event.get("object") or {}):
                    yield event
        finally:
            await bus.unmark(marker)

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
