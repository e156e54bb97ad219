"""List+watch caches of this master's Jobs and Pods (and its namespace's Events), so a pass reads memory.

Why: listing Jobs and Pods on every pass costs two reads per pass (load that grows with the cluster and
with the pass rate) and gives two snapshots taken at different moments.  This is the Kubernetes
*reflector* pattern (client-go's ``Reflector``, kopf's watcher): LIST once, remember the list's
``resourceVersion`` (RV), WATCH from it with ``allowWatchBookmarks`` and a server ``timeoutSeconds``, apply
``ADDED``/``MODIFIED``/``DELETED`` to the cache, let ``BOOKMARK`` advance the RV, reconnect from the last RV
when a watch ends, and LIST again only on ``410 Gone`` (the RV was compacted away), after which the cache is
replaced whole.  One daemon thread per kind; :meth:`Reflector.stop` shuts the socket of the open watch.

**One consistent view per pass** (:meth:`ClusterWatch.view`): ``status.py`` relies on "Jobs first, then
Pods": a Job's verdict (Complete, Failed) must come with its pods' end, because the Job controller writes
the verdict only after it saw the pod end.  RVs are etcd revisions, one counter for every kind, so "the pods
cache has seen every change up to RV R" is a fact the pods watch can state (its last event or bookmark).
The rule: copy the jobs; R = the highest RV among the jobs the caller says need it (by default those with a
verdict, :func:`has_verdict`); wait (bounded) until the pods watch has seen R; if it does not (the API server
sends bookmarks only about once a minute, and a pod that ended has no further events), or an RV is not an
integer, take the pods from one LIST, which is never older than the jobs copied before it (the old
guarantee).  So a LIST happens about once per attempt that ends, not once per pass.

Before the first LIST of both kinds has succeeded, or while a watch keeps failing (an API server that does
not answer, a Role without ``watch``), :meth:`ClusterWatch.view` answers None and the engine lists as before,
so errors still surface as EngineErrors in the pass that meets them.

Events are not labelled: the events watch takes every Event of the namespace about a Pod or a Job (at most
:data:`EVENT_LIMIT`, oldest dropped), and the view keeps only those about the pods and Jobs it returns.

Who calls it: ``engine.py`` (constructed on the first ``observe``, stopped in ``stop``).  Tests:
``tests/k8s/test_watch.py`` (the fake API server's watches, or a real cluster), ``tests/unit/test_k8s_informer.py``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubetrain.engines.kubernetes.manifests import ATTEMPT_LABEL, JOB_LABEL

log = logging.getLogger("kubetrain.kubernetes.watch")

#: Server-side ``timeoutSeconds`` of one watch request; the watch is then resumed from its RV (no LIST).
WATCH_SECONDS = 240
#: Seconds a watch may stay silent past its timeout before the client gives up on the connection
#: (a dropped network); the server sends bookmarks about once a minute and ends the watch at its timeout.
READ_SLACK_SECONDS = 30
#: Seconds to connect, and for a LIST to answer.
REQUEST_TIMEOUT = 30
#: How long view() waits for the pods watch to reach the jobs' RV before it LISTs pods instead.
CONSISTENCY_WAIT_SECONDS = 1.0
#: Events kept (about any Pod or Job of the namespace): enough for every pending pod of a busy namespace.
EVENT_LIMIT = 2000
#: Retry delays after a failed LIST or WATCH (seconds, the last repeats).
BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: A watch that ends this fast with nothing in it is resumed after this pause (a server shutting down).
QUICK_END_SECONDS = 0.2
#: Job conditions that are a verdict: the pods must be at least as new as such a Job (see status.py).
VERDICTS = ("Complete", "SuccessCriteriaMet", "Failed", "FailureTarget")


class Expired(Exception):
    """The watch's resourceVersion is gone (410): LIST again."""


@dataclass(frozen=True, slots=True)
class Counters:
    """What one reflector has done so far (tests assert that passes after the sync cost no LIST)."""

    lists: int  # LIST requests for the cache (the first, and one after each 410)
    watches: int  # WATCH requests started
    expired: int  # 410s answered by a new LIST
    errors: int  # failed LIST/WATCH requests (retried after a back-off)


@dataclass(frozen=True, slots=True)
class View:
    """One pass's reading of the cluster: ``pods`` never older than ``jobs``; ``events`` about them."""

    jobs: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    events: list[dict[str, Any]]
    #: The pods came from a LIST: the pods watch had not reached the jobs' resourceVersion.
    listed_pods: bool = False


# ---------------------------------------------------------------- pure parts

def rv_of(obj: dict[str, Any] | None) -> int | None:
    """An object's resourceVersion as an integer; None when absent or not an integer (an API server that
    does not use etcd revisions, which the API does not promise): then the view falls back to a LIST."""
    value = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def has_verdict(job: dict[str, Any]) -> bool:
    """Does the Job carry a verdict condition (then status.py reads its pods' end, which must be known)?"""
    return any(c.get("type") in VERDICTS and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


def required_rv(jobs: list[dict[str, Any]], needs: Callable[[dict[str, Any]], bool] | None,
                watermark: int | None) -> int | None:
    """The RV the pods must have reached for this jobs copy: the highest RV of the jobs that ``needs``
    picks (every job, the strict rule, when None: then the jobs cache's own ``watermark``); 0 when none
    needs it; None when an RV is not an integer (the caller LISTs the pods)."""
    if needs is None:
        return watermark
    target = 0
    for job in jobs:
        if needs(job):
            rv = rv_of(job)
            if rv is None:
                return None
            target = max(target, rv)
    return target


def by_attempt(items: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Objects grouped by the (job, attempt number) of their labels; unlabelled ones are left out."""
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for item in items:
        labels = (item.get("metadata") or {}).get("labels") or {}
        try:
            key = (labels[JOB_LABEL], int(labels[ATTEMPT_LABEL]))
        except (KeyError, ValueError):
            continue
        out.setdefault(key, []).append(item)
    return out


def about(events: list[dict[str, Any]], objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events whose involvedObject is one of ``objects``: by uid, which every event names (by name
    only for one that names no uid; items of a LIST carry no ``kind``, so the name alone is compared)."""
    uids = {(o.get("metadata") or {}).get("uid") for o in objects} - {None}
    names = {(o.get("metadata") or {}).get("name") for o in objects} - {None}
    found = []
    for event in events:
        target = event.get("involvedObject") or {}
        if (target["uid"] in uids) if target.get("uid") else (target.get("name") in names):
            found.append(event)
    return found


def _about_pod_or_job(event: dict[str, Any]) -> bool:
    return (event.get("involvedObject") or {}).get("kind") in ("Pod", "Job")


def lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Newline-separated JSON documents from a chunked watch stream (a chunk may hold several, or part of one)."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from (line for line in complete if line.strip())
    if buffer.strip():
        yield buffer


# ---------------------------------------------------------------- one kind

class Reflector:
    """A cache of one kind of object, kept by LIST+WATCH in a daemon thread (see the module docstring).

    ``call`` is the client's list method (e.g. ``BatchV1Api.list_namespaced_job``); it serves both LIST and
    WATCH (``watch=True``).  ``keep`` filters what is cached; ``limit`` bounds it (oldest change dropped).
    """

    def __init__(self, kind: str, call: Callable[..., Any], *, namespace: str, label_selector: str | None = None,
                 keep: Callable[[dict[str, Any]], bool] | None = None, limit: int | None = None,
                 watch_seconds: int = WATCH_SECONDS, request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.kind = kind
        self._call = call
        self._namespace = namespace
        self._selector = {"label_selector": label_selector} if label_selector else {}
        self._keep = keep
        self._limit = limit
        self._watch_seconds = watch_seconds
        self._timeout = request_timeout
        self._cache: dict[tuple[str, str], dict[str, Any]] = {}
        self._rv: str | None = None  # the last RV seen: list, event or bookmark
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self._synced = False  # a LIST has filled the cache
        self._relist_due = False  # a 410 said our RV is gone: LIST again before the next WATCH
        self._failing = False  # the last request failed (cleared by the next that succeeds)
        self.last_error: str | None = None
        self._lists = self._watches = self._expired = self._errors = 0

    # -- reading (any thread)
    @property
    def healthy(self) -> bool:
        """Synced and not failing: its cache is as current as the watch can make it."""
        return self._synced and not self._failing

    @property
    def resource_version(self) -> str | None:
        return self._rv

    def counters(self) -> Counters:
        return Counters(self._lists, self._watches, self._expired, self._errors)

    def snapshot(self) -> tuple[list[dict[str, Any]], str | None]:
        """The cached objects and the RV they are complete up to, taken together."""
        with self._changed:
            return list(self._cache.values()), self._rv

    def wait_for(self, target: int, timeout: float) -> bool:
        """Wait until this cache has seen every change up to RV ``target``; False at the timeout, or when
        the RV is not an integer."""
        def reached() -> bool:
            try:
                return int(self._rv or "") >= target
            except ValueError:
                return False
        with self._changed:
            return self._changed.wait_for(reached, timeout)

    def wait_synced(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._synced, timeout)

    def list_once(self) -> tuple[list[dict[str, Any]], str | None]:
        """One LIST, outside the cache (the view's fallback); raises what the client raises."""
        data = self._list_request()
        return [item for item in data.get("items") or [] if self._keep is None or self._keep(item)], \
            (data.get("metadata") or {}).get("resourceVersion")

    # -- the thread
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"k8s-watch-{self.kind}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread promptly: no new request, and the open watch's socket is shut."""
        self._stopping.set()
        response = self._response
        if response is not None:
            for end in ("shutdown", "close"):  # urllib3 >= 2.3 can unblock a read in another thread
                try:
                    getattr(response, end)()
                    break
                except Exception:  # noqa: BLE001 - released already, or no shutdown: try the next way
                    continue
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if self._relist_due or not self._synced:
                    self._relist()
                started, seen = time.monotonic(), self._rv
                self._watch()
                failures = 0
                if time.monotonic() - started < QUICK_END_SECONDS and self._rv == seen:
                    self._stopping.wait(QUICK_END_SECONDS)  # ended at once with nothing: do not spin
            except Exception as exc:  # noqa: BLE001 - a thread must not die: it retries after a back-off
                if not isinstance(exc, Expired) and getattr(exc, "status", None) != 410:  # HTTP 410 on the request
                    self._failed(exc, failures)
                    failures += 1
                    continue
                self._expired += 1
                self._relist_due = True  # what happened since our RV is lost; the cache stays whole until then
                log.info("watch of %s: resourceVersion expired (410); listing again", self.kind)

    def _failed(self, exc: Exception, failures: int) -> None:
        if self._stopping.is_set():
            return
        self._errors += 1
        self._failing = True
        self.last_error = f"{type(exc).__name__}: {exc}"
        delay = BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS) - 1)]
        log.warning("watch of %s failed (%s); retrying in %.1f s", self.kind, self.last_error, delay)
        with self._changed:
            self._changed.notify_all()
        self._stopping.wait(delay)

    def _list_request(self) -> dict[str, Any]:
        response = self._call(self._namespace, **self._selector, _preload_content=False,
                              _request_timeout=self._timeout)
        try:
            return json.loads(response.data or b"{}")
        finally:
            response.release_conn()

    def _relist(self) -> None:
        data = self._list_request()
        self._lists += 1
        cache: dict[tuple[str, str], dict[str, Any]] = {}
        for item in data.get("items") or []:
            if self._keep is None or self._keep(item):
                cache[_key(item)] = item
        self._bound(cache)
        with self._changed:
            self._cache = cache
            self._rv = (data.get("metadata") or {}).get("resourceVersion")
            self._synced = True
            self._relist_due = False
            self._failing = False
            self._changed.notify_all()

    def _watch(self) -> None:
        response = self._call(
            self._namespace, **self._selector, watch=True, resource_version=self._rv, allow_watch_bookmarks=True,
            timeout_seconds=self._watch_seconds, _preload_content=False,
            _request_timeout=(self._timeout, self._watch_seconds + READ_SLACK_SECONDS))
        self._response = response
        self._watches += 1
        try:
            if self._stopping.is_set():
                return
            self._failing = False
            for line in lines(response.stream(amt=None, decode_content=True)):
                self._apply(json.loads(line))
                if self._stopping.is_set():
                    return
        finally:
            self._response = None
            response.close()  # a stream left unread cannot go back to the pool as it is
            response.release_conn()

    def _apply(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410 or obj.get("reason") in ("Expired", "Gone"):
                raise Expired(obj.get("message") or "410")
            raise RuntimeError(f"watch error {code} {obj.get('reason')}: {obj.get('message')}")
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        with self._changed:
            if kind in ("ADDED", "MODIFIED"):
                key = _key(obj)
                self._cache.pop(key, None)  # re-inserted last: the bound drops the oldest change first
                if self._keep is None or self._keep(obj):
                    self._cache[key] = obj
                    self._bound(self._cache)
            elif kind == "DELETED":
                self._cache.pop(_key(obj), None)
            if rv:
                self._rv = rv
            self._changed.notify_all()

    def _bound(self, cache: dict[tuple[str, str], dict[str, Any]]) -> None:
        if self._limit is not None:
            for key in list(cache)[: max(0, len(cache) - self._limit)]:
                del cache[key]


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


# ---------------------------------------------------------------- the master's view

class ClusterWatch:
    """The Jobs and Pods of this master (by label) and the Events of its namespace, watched; see module doc."""

    def __init__(self, batch: Any, core: Any, *, namespace: str, label_selector: str, events: bool = True,
                 consistency_wait: float = CONSISTENCY_WAIT_SECONDS, watch_seconds: int = WATCH_SECONDS) -> None:
        self.jobs = Reflector("jobs", batch.list_namespaced_job, namespace=namespace, label_selector=label_selector,
                              watch_seconds=watch_seconds)
        self.pods = Reflector("pods", core.list_namespaced_pod, namespace=namespace, label_selector=label_selector,
                              watch_seconds=watch_seconds)
        self.events = Reflector("events", core.list_namespaced_event, namespace=namespace, keep=_about_pod_or_job,
                                limit=EVENT_LIMIT, watch_seconds=watch_seconds) if events else None
        self.consistency_wait = consistency_wait
        #: Views whose pods came from a LIST (the pods watch had not reached the jobs' RV in time).
        self.fallback_lists = 0

    def _reflectors(self) -> list[Reflector]:
        return [r for r in (self.jobs, self.pods, self.events) if r is not None]

    def start(self) -> "ClusterWatch":
        for reflector in self._reflectors():
            reflector.start()
        return self

    def stop(self) -> None:
        for reflector in self._reflectors():
            reflector._stopping.set()  # all at once, then wait for each
        for reflector in self._reflectors():
            reflector.stop()

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(r.wait_synced(max(0.0, deadline - time.monotonic())) for r in (self.jobs, self.pods))

    def lists(self) -> int:
        """Every LIST made so far: the caches' (first, and after 410s) and the views' fallbacks."""
        return sum(r.counters().lists for r in self._reflectors()) + self.fallback_lists

    def view(self, needs: Callable[[dict[str, Any]], bool] | None = has_verdict) -> View | None:
        """Jobs, pods never older than them, and the events about both; None when the caches cannot be
        trusted yet (not synced, or a watch failing): then the caller LISTs as without a watch.

        ``needs`` picks the jobs whose pods must be known up to the job's RV (None: all jobs, the strict rule).
        A fallback LIST of pods raises what the client raises (the engine turns it into an EngineError).
        """
        if not (self.jobs.healthy and self.pods.healthy):
            return None
        jobs, jobs_rv = self.jobs.snapshot()
        target = required_rv(jobs, needs, _int_or_none(jobs_rv))
        pods, pods_rv = self.pods.snapshot()
        listed = False
        if target is None or _int_or_none(pods_rv) is None or target > int(pods_rv or 0):
            if target is not None and self.pods.wait_for(target, self.consistency_wait):
                pods, _ = self.pods.snapshot()
            else:
                pods, _ = self.pods.list_once()
                self.fallback_lists += 1
                listed = True
        events: list[dict[str, Any]] = []
        if self.events is not None and self.events.healthy:
            events = about(self.events.snapshot()[0], jobs + pods)
        return View(jobs, pods, events, listed_pods=listed)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value or "")
    except ValueError:
        return None
