"""The informer's pure parts and its view rule, without a server: events as notes, RVs, the consistent view.

The view rule (see ``informer.py``): pods are never older than a Job with a verdict; the pods watch is
waited for (bounded), else the pods come from one LIST.  Here the caches are filled by hand (``_relist``
from a canned LIST, ``_apply`` for watch events), so each case is exact and instant.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from kubetrain.engines.kubernetes.events import MAX_MESSAGE, event_notes
from kubetrain.engines.kubernetes.informer import (
    ClusterWatch,
    about,
    by_attempt,
    has_verdict,
    lines,
    required_rv,
)

LABELS = {"kubetrain.io/master": "m", "kubetrain.io/job": "train", "kubetrain.io/attempt": "1"}


def obj(name: str, rv: int | str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "resourceVersion": str(rv),
                         "labels": dict(LABELS)}, **extra}


def verdict(name: str, rv: int) -> dict[str, Any]:
    return obj(name, rv, status={"conditions": [{"type": "Complete", "status": "True"}]})


def event(reason: str, message: str, *, uid: str = "uid-p", kind: str = "Warning", at: str = "2030-01-01T00:00:00Z",
          name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": f"{name}.{reason}.{at}"}, "type": kind, "reason": reason, "message": message,
            "involvedObject": {"kind": "Pod", "name": name, "uid": uid}, "lastTimestamp": at}


# ---------------------------------------------------------------- events -> notes

def test_warning_events_become_notes_deduplicated_newest_last() -> None:
    events = [
        event("FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu.", at="2030-01-01T00:00:05Z"),
        event("Scheduled", "Successfully assigned ns/p to n1", kind="Normal", at="2030-01-01T00:00:06Z"),
        event("FailedMount", "MountVolume.SetUp failed", at="2030-01-01T00:00:01Z"),
        event("FailedScheduling", "0/3 nodes  are available:\n 3 Insufficient cpu.", at="2030-01-01T00:00:02Z"),
        event("Failed", "Failed to pull image \"nope\": not found", at="2030-01-01T00:00:07Z"),
    ]
    assert event_notes(events) == (
        "FailedMount: MountVolume.SetUp failed",
        "FailedScheduling: 0/3 nodes are available: 3 Insufficient cpu.",
        'Failed: Failed to pull image "nope": not found',
    )


def test_notes_skip_what_the_attempt_already_says_and_stay_short() -> None:
    known = ("waiting for a node: 0/1 nodes are available: 1 node(s) had untolerated taint.",)
    events = [event("FailedScheduling", "0/1 nodes are available: 1 node(s) had untolerated taint."),
              event("BackOff", "x" * 1000, at="2030-01-01T00:00:09Z")]
    (note,) = event_notes(events, known=known)
    assert note.startswith("BackOff: xxx") and len(note) == len("BackOff: ") + MAX_MESSAGE and note.endswith("…")
    many = [event("Failed", f"reason {i}", at=f"2030-01-01T00:00:{i:02d}Z") for i in range(9)]
    assert event_notes(many, limit=2) == ("Failed: reason 7", "Failed: reason 8")


def test_events_are_matched_to_objects_by_uid_then_by_name() -> None:
    pod = obj("p", 5)
    ours, theirs = event("A", "a"), event("B", "b", uid="uid-other")
    no_uid = event("C", "c", uid="")
    other_name = event("D", "d", uid="", name="q")
    assert about([ours, theirs, no_uid, other_name], [pod]) == [ours, no_uid]


# ---------------------------------------------------------------- resource versions

def test_required_rv_is_the_newest_verdict_and_none_when_not_an_integer() -> None:
    jobs = [obj("a", 40), verdict("b", 30), verdict("c", 20)]
    assert required_rv(jobs, has_verdict, watermark=50) == 30  # a job without verdict needs no wait
    assert required_rv(jobs, None, watermark=50) == 50  # the strict rule: the jobs cache's own RV
    assert required_rv([obj("a", 40)], has_verdict, watermark=50) == 0
    assert required_rv([verdict("b", "abc")], has_verdict, watermark=50) is None
    failed = obj("d", 9, status={"conditions": [{"type": "FailureTarget", "status": "True"}]})
    assert has_verdict(failed) and not has_verdict(obj("e", 1, status={"conditions": [
        {"type": "Failed", "status": "False"}]}))


def test_watch_lines_survive_any_chunking() -> None:
    docs = [b'{"type":"ADDED","object":{}}', b'{"type":"BOOKMARK","object":{}}', b'{"type":"DELETED"}']
    stream = b"\n".join(docs) + b"\n"
    for size in (1, 3, 7, len(stream)):
        chunks = [stream[i:i + size] for i in range(0, len(stream), size)]
        assert list(lines(iter(chunks))) == docs
    assert list(lines(iter([b'{"a":1}\n{"b"', b':2}']))) == [b'{"a":1}', b'{"b":2}']


def test_objects_group_by_their_attempt_labels() -> None:
    unlabelled = {"metadata": {"name": "x", "labels": {}}}
    assert by_attempt([obj("a", 1), unlabelled]) == {("train", 1): [obj("a", 1)]}


# ---------------------------------------------------------------- the view rule

class Listing:
    """A client list method: LIST answers what ``items`` holds now; counts the LISTs."""

    def __init__(self, items: list[dict[str, Any]], rv: str) -> None:
        self.items, self.rv, self.calls = items, rv, 0

    def __call__(self, namespace: str, **kwargs: Any) -> Any:
        assert not kwargs.get("watch"), "no thread runs here"
        self.calls += 1
        body = json.dumps({"metadata": {"resourceVersion": self.rv}, "items": self.items}).encode()
        return type("Response", (), {"data": body, "release_conn": lambda self: None})()


class Api:
    def __init__(self, **calls: Listing) -> None:
        for name, call in calls.items():
            setattr(self, name, call)


def synced(jobs: list[dict[str, Any]], jobs_rv: str, pods: list[dict[str, Any]], pods_rv: str,
           wait: float = 0.05) -> tuple[ClusterWatch, Listing]:
    pod_list = Listing(pods, pods_rv)
    batch = Api(list_namespaced_job=Listing(jobs, jobs_rv))
    core = Api(list_namespaced_pod=pod_list, list_namespaced_event=Listing([], "1"))
    watch = ClusterWatch(batch, core, namespace="ns", label_selector="kubetrain.io/master=m", consistency_wait=wait)
    watch.jobs._relist()
    watch.pods._relist()
    pod_list.calls = 0
    return watch, pod_list


def test_no_view_before_both_caches_are_listed() -> None:
    watch = ClusterWatch(Api(list_namespaced_job=Listing([], "1")),
                         Api(list_namespaced_pod=Listing([], "1"), list_namespaced_event=Listing([], "1")),
                         namespace="ns", label_selector="x=y")
    assert watch.view() is None
    watch.jobs._relist()
    assert watch.view() is None  # the engine LISTs both, as without a watch


def test_pods_as_new_as_the_verdict_are_served_from_the_cache() -> None:
    watch, pod_list = synced([verdict("j", 10), obj("k", 30)], "30", [obj("p", 12)], "12")
    view = watch.view()
    assert view is not None and not view.listed_pods and pod_list.calls == 0
    assert [p["metadata"]["name"] for p in view.pods] == ["p"]
    strict = watch.view(needs=None)  # every job counts: the pods (12) are older than the jobs (30)
    assert strict is not None and strict.listed_pods and pod_list.calls == 1


def test_pods_older_than_a_verdict_are_listed_when_the_watch_does_not_catch_up() -> None:
    ended = obj("p", 25, status={"phase": "Failed"})
    watch, pod_list = synced([verdict("j", 30)], "30", [obj("p", 20)], "20")
    pod_list.items, pod_list.rv = [ended], "31"  # what the server has meanwhile
    view = watch.view()
    assert view is not None and view.listed_pods and view.pods == [ended] and watch.fallback_lists == 1


def test_a_bookmark_during_the_wait_spares_the_list() -> None:
    ended = obj("p", 25, status={"phase": "Failed"})
    watch, pod_list = synced([verdict("j", 30)], "30", [obj("p", 20)], "20", wait=5.0)

    def watch_events() -> None:
        watch.pods._apply({"type": "MODIFIED", "object": ended})
        watch.pods._apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "33"}}})
    threading.Timer(0.05, watch_events).start()
    view = watch.view()
    assert view is not None and not view.listed_pods and pod_list.calls == 0 and view.pods == [ended]


def test_a_resource_version_that_is_no_integer_means_a_list() -> None:
    watch, pod_list = synced([verdict("j", "etcd-less")], "x1", [obj("p", "x0")], "x0")
    view = watch.view()
    assert view is not None and view.listed_pods and pod_list.calls == 1


def test_watch_events_update_the_cache_and_an_error_410_asks_for_a_list() -> None:
    watch, _ = synced([], "5", [], "5")
    jobs = watch.jobs
    jobs._apply({"type": "ADDED", "object": obj("j", 6)})
    jobs._apply({"type": "MODIFIED", "object": obj("j", 7)})
    assert jobs.snapshot() == ([obj("j", 7)], "7")
    jobs._apply({"type": "DELETED", "object": obj("j", 8)})
    jobs._apply({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}})
    assert jobs.snapshot() == ([], "12")
    try:
        jobs._apply({"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}})
    except Exception as exc:  # noqa: BLE001 - the type is what the test checks
        assert type(exc).__name__ == "Expired"
    else:
        raise AssertionError("a 410 ERROR event must end the watch with Expired")


def test_the_events_cache_is_bounded_and_keeps_pods_and_jobs_only() -> None:
    watch, _ = synced([], "5", [], "5")
    events = watch.events
    assert events is not None
    events._limit = 3
    for i in range(5):
        events._apply({"type": "ADDED", "object": event("Failed", str(i), name=f"p{i}")})
    events._apply({"type": "ADDED", "object": {**event("X", "node"), "involvedObject": {"kind": "Node", "name": "n"}}})
    assert [e["message"] for e in events.snapshot()[0]] == ["2", "3", "4"]
