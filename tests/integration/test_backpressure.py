"""Back-pressure on a real master: a storm of slow lists neither starves submits and gets nor the reconcile loop.

The master runs with a list limit of 1 on a store holding a few thousand
finished jobs (written through the store before it starts), while threads
send full 500-job list pages over TCP as fast as they are answered.  During
that storm a submit and a get must come back — 2xx, or a 503 that says which
class is full and when to retry — and a job submitted then must run to
``Succeeded``.  A second test holds the only ``stream`` slot with a followed
log and shows the SDK riding out the 503s and succeeding once the slot frees;
a third holds more followed logs than anyio's default 40 worker threads and
shows a get still answered (the pool is sized to the class limits).
Nothing here measures time: each wait is for a condition, with a deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from kubetrain.core.attempts import Outcome
from kubetrain.core.planning import Placement, Plan
from kubetrain.core.records import Provenance
from kubetrain.core.specs import validate_job
from kubetrain.core.states import Reason
from kubetrain.settings import load_settings
from kubetrain.store.store import Store
from tests.conftest import PYTHON, make_env, wait_until

STORED_JOBS = 2000
BATCH = 500
#: A deadline for one request: far past any prompt answer, so a request queued behind the storm fails the test.
REQUEST_DEADLINE = 20.0


def store_finished_jobs(home: Path, count: int) -> None:
    """``count`` finished jobs written the way the master would, before it starts on ``home``."""
    store = Store(load_settings(make_env(home)).database_url)
    try:
        store.migrate()
        now = time.time() - 3600
        for index in range(count):
            spec = validate_job({"metadata": {"name": f"old-{index:05d}", "labels": {"team": ("a", "b")[index % 2]}},
                                 "spec": {"command": ["true"], "params": {"lr": 0.1, "seed": index}}})
            store.create_job(spec, Provenance(submitter="bench"), now=now)
        for start in range(0, count, BATCH):
            names = [f"old-{i:05d}" for i in range(start, min(start + BATCH, count))]
            store.commit_plan(Plan(placements=[Placement(n, "node-1", ()) for n in names]), {}, now=now + 1)
            store.mark_running_many([(n, 1, {}, now + 2, ()) for n in names])
            store.finish_attempts([(n, 1, Outcome(Reason.COMPLETED, "exit code 0", exit_code=0)) for n in names],
                                  now=now + 3)
    finally:
        store.close()


class ListStorm:
    """Threads sending list requests back to back until stopped; counts the answers by status."""

    def __init__(self, master, threads: int) -> None:
        self.master = master
        self.statuses: Counter[int] = Counter()
        self.refused_classes: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._hammer, daemon=True) for _ in range(threads)]

    def __enter__(self) -> ListStorm:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_DEADLINE * 2)

    def refused(self) -> int:
        with self._lock:
            return self.statuses[503]

    def _hammer(self) -> None:
        with self.master.http(timeout=REQUEST_DEADLINE) as http:
            while not self._stop.is_set():
                try:
                    response = http.get("/api/v1/jobs", params={"limit": 500, "selector": "team=a"})
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 503:
                        self.refused_classes[response.json()["details"]["class"]] += 1


def holder_job(name: str, go: Path) -> dict:
    """A job that prints "holding" once, then stays quiet until the file ``go`` exists."""
    return {"metadata": {"name": name}, "spec": {
        "command": [PYTHON, "-c", ("import os, time\nprint('holding', flush=True)\n"
                                   f"while not os.path.exists({str(go)!r}): time.sleep(0.05)")],
        "resources": {"cpu": "100m", "memory": "64Mi"}}}


def assert_answered_or_refused(response: httpx.Response, ok: int, cls: str) -> None:
    """A request during the storm: done, or refused at once naming its class and when to retry."""
    if response.status_code == 503:
        assert int(response.headers["Retry-After"]) >= 1
        body = response.json()
        assert body["code"] == "overloaded" and body["details"]["class"] == cls, body
    else:
        assert response.status_code == ok, response.text


def test_a_list_storm_leaves_submits_gets_and_the_reconcile_loop_working(master_factory, home: Path) -> None:
    store_finished_jobs(home, STORED_JOBS)
    master = master_factory(KUBETRAIN_CONCURRENCY_LIST="1")
    job = {"spec": {"metadata": {"name": "during-storm"}, "spec": {
        "command": [PYTHON, "-c", "print('ran during the storm')"], "resources": {"cpu": "100m", "memory": "64Mi"}}}}
    with ListStorm(master, threads=6) as storm, master.http(timeout=REQUEST_DEADLINE) as http:
        wait_until(lambda: storm.refused() >= 3, timeout=60, what="the list class to be saturated (503s)")

        submitted = http.post("/api/v1/jobs", json=job)
        assert_answered_or_refused(submitted, 201, "write")
        if submitted.status_code == 503:  # the SDK retries what the master refused unprocessed
            master.client.submit(job["spec"])
        got = http.get("/api/v1/jobs/old-00007")
        assert_answered_or_refused(got, 200, "read")
        assert http.get("/healthz").status_code == 200

        finished = master.wait_state("during-storm", timeout=60)
        refused_before = storm.refused()
        wait_until(lambda: storm.refused() > refused_before, timeout=60, what="the storm to go on after the job ran")
    assert finished.state == "Succeeded"
    assert b"ran during the storm" in b"".join(master.client.logs("during-storm"))
    assert not storm.failures, storm.failures[:3]  # no list timed out or lost its connection
    assert set(storm.statuses) <= {200, 503}, storm.statuses
    assert storm.statuses[200] > 0 and set(storm.refused_classes) == {"list"}


def test_the_sdk_rides_out_503s_and_succeeds_once_the_master_has_room(master_factory, tmp_path: Path) -> None:
    master = master_factory(KUBETRAIN_CONCURRENCY_STREAM="1")
    go = tmp_path / "go"
    holder = master.client.submit(holder_job("holder", go))
    quick = master.client.submit({"metadata": {"name": "quick"}, "spec": {
        "command": [PYTHON, "-c", "print('quick output')"], "resources": {"cpu": "100m", "memory": "64Mi"}}})
    master.wait_state(quick.name, timeout=60)

    with master.http(timeout=REQUEST_DEADLINE) as http, \
            http.stream("GET", f"/api/v1/jobs/{holder.name}/logs", params={"follow": True}) as follow:
        assert follow.status_code == 200
        assert b"holding" in next(follow.iter_raw())  # the follow is in progress: it holds the one stream slot
        refused = http.get(f"/api/v1/jobs/{quick.name}/logs")
        assert refused.status_code == 503 and refused.json()["details"] == {"class": "stream", "limit": 1,
                                                                              "retry_after": 1}

        statuses: list[int] = []
        master.client._http.event_hooks["response"].append(lambda response: statuses.append(response.status_code))
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(b"".join(master.client.logs(quick.name))))
        reader.start()
        wait_until(lambda: 503 in statuses, timeout=30, what="the SDK's first try to be refused")
        go.touch()  # the holder ends, its follow ends, the slot is free
        reader.join(timeout=60)
    assert result == [b"quick output\n"]
    assert statuses[0] == 503 and statuses[-1] == 200 and set(statuses) == {200, 503}
    assert master.wait_state(holder.name, timeout=60).state == "Succeeded"


def test_followed_logs_past_anyios_40_threads_leave_gets_an_answer(master_factory, tmp_path: Path) -> None:
    """Each ``logs -f`` holds a worker thread while it waits for output; 45 of them would take every one of
    anyio's default 40, and a get (whose route runs in a worker thread too) would wait for ever.  The pool
    is sized to the class limits, so it answers."""
    followers = 45
    master = master_factory(KUBETRAIN_CONCURRENCY_STREAM=str(followers + 3))
    go = tmp_path / "go"
    holder = master.client.submit(holder_job("holder", go))
    master.wait_state(holder.name, "Running", timeout=60)
    url = httpx.URL(master.url)
    head = (f"GET /api/v1/jobs/{holder.name}/logs?follow=true HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
            f"Authorization: Bearer {master.token}\r\n\r\n").encode()
    sockets = [socket.create_connection((url.host, url.port), timeout=REQUEST_DEADLINE) for _ in range(followers)]
    try:
        for sock in sockets:
            sock.sendall(head)
        for sock in sockets:  # each follow has sent what was logged and waits in its thread for more
            data = b""
            while b"holding" not in data:
                chunk = sock.recv(65536)
                assert chunk, f"a follow ended early: {data[:200]!r}"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")
        with master.http(timeout=REQUEST_DEADLINE) as http:
            got = http.get(f"/api/v1/jobs/{holder.name}")
        assert got.status_code == 200 and got.json()["state"] == "Running"
    finally:
        go.touch()
        for sock in sockets:
            sock.close()
    assert master.wait_state(holder.name, timeout=60).state == "Succeeded"


def test_a_follower_that_hangs_up_gives_its_stream_slot_back_before_the_job_ends(master_factory, tmp_path: Path) -> None:
    master = master_factory(KUBETRAIN_CONCURRENCY_STREAM="1")
    go = tmp_path / "go"
    holder = master.client.submit(holder_job("quiet", go))
    try:
        with master.http(timeout=REQUEST_DEADLINE) as http:
            with http.stream("GET", f"/api/v1/jobs/{holder.name}/logs", params={"follow": True}) as follow:
                assert b"holding" in next(follow.iter_raw())
                assert http.get(f"/api/v1/jobs/{holder.name}/logs").status_code == 503  # the one slot is held
            # The follower hung up (its connection closed) while the job runs on, printing nothing more.
        with master.http(timeout=REQUEST_DEADLINE) as http:
            wait_until(lambda: http.get(f"/api/v1/jobs/{holder.name}/logs").status_code == 200, timeout=30,
                       what="the slot of the closed follow to be free")
        assert master.client.get_job(holder.name).state == "Running"
    finally:
        go.touch()
