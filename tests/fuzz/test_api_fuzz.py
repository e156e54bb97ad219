"""Schemathesis against a live master's own OpenAPI schema: every operation, no 5xx, clean 4xx.

The master is real (the ``master`` fixture: its own home, node agent and
supervisors).  Before fuzzing it runs a few jobs and a small experiment for
real; then it is restarted with a node that offers no CPU at all, so that
every job the fuzzer manages to submit fails ``Unschedulable`` at once and
no generated command ever runs on this machine.  The fuzzer then sends
positive (schema-conforming) and negative cases to every operation; for a
share of them the path's ``{name}`` is a real job, experiment or volume, so
that the deep paths (logs, metrics, artifacts, cancel of a finished job,
rerun) are reached and not only 404s.

Afterwards everything stored before the run must be exactly as it was, the
reconcile loop must still work, the master must still be the same process,
and its log must hold no traceback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import PYTHON, wait_until
from tests.fuzz.conftest import API_EXAMPLES, DERANDOMIZE

pytestmark = pytest.mark.timeout(900)

#: Bare framework phrases: a 4xx must say more than these.
BARE_MESSAGES = {"not found", "method not allowed", "bad request", "there was an error parsing the body",
                 "internal server error", "invalid request", "unprocessable entity"}
REQUEST_TIMEOUT = 15.0
TERMINAL = ("Succeeded", "Failed", "Cancelled")


# -- seeding ------------------------------------------------------------------------------

def seed(master, tmp_path: Path) -> dict[str, list[str]]:
    """Jobs that really ran (succeeded, failed, cancelled), metrics, an experiment and a volume."""
    client = master.client
    ok = client.submit({"metadata": {"name": "seed-ok", "labels": {"team": "fuzz"}}, "spec": {
        "command": [PYTHON, "-c", ("import os; print('hello from seed-ok'); "
                                   "open(os.path.join(os.environ['KUBETRAIN_OUTPUT_DIR'], 'model.txt'), 'w').write('w')")],
        "params": {"lr": 0.1}, "resources": {"cpu": "100m", "memory": "128Mi"}}})
    bad = client.submit({"metadata": {"name": "seed-bad"}, "spec": {
        "command": [PYTHON, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"],
        "resources": {"cpu": "100m", "memory": "128Mi"}}})
    slow = client.submit({"metadata": {"name": "seed-cancelled"}, "spec": {
        "command": [PYTHON, "-c", "import time; time.sleep(60)"], "resources": {"cpu": "100m", "memory": "128Mi"}}})
    experiment = client.submit_experiment({"metadata": {"name": "seed-sweep"}, "spec": {
        "template": {"command": ["true"], "resources": {"cpu": "100m", "memory": "64Mi"}},
        "parameters": [{"name": "x", "type": "categorical", "values": [1, 2]}],
        "algorithm": "grid", "objective": {"metric": "score"}, "parallelism": 2}})
    master.wait_state(slow.name, "Running")
    client.cancel(slow.name)
    for job in (ok, bad, slow):
        master.wait_state(job.name, *TERMINAL, timeout=60)
    response = httpx.post(f"{master.url}/api/v1/jobs/seed-ok/metrics", headers=master.auth,
                          json={"points": [{"step": s, "name": "loss", "value": 1.0 / s} for s in range(1, 6)]})
    assert response.status_code == 200, response.text
    wait_until(lambda: client.get_experiment(experiment.name).state != "Running", timeout=90,
               what="the seed experiment to end")
    assert httpx.post(f"{master.url}/api/v1/volumes", json={"name": "seed-vol"}, headers=master.auth).status_code == 201
    jobs = [j.name for j in client.list_jobs(limit=10_000)]
    return {"jobs": sorted(jobs), "experiments": [experiment.name], "volumes": ["seed-vol"]}


def snapshot(url: str, seeded: dict[str, list[str]], auth: dict[str, str]) -> dict[str, Any]:
    """Everything the API shows about the seeded objects."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT, headers=auth) as http:
        for name in seeded["jobs"]:
            out[f"job/{name}"] = http.get(f"/api/v1/jobs/{name}").json()
            out[f"logs/{name}"] = http.get(f"/api/v1/jobs/{name}/logs").text
            out[f"metrics/{name}"] = http.get(f"/api/v1/jobs/{name}/metrics").json()
            out[f"artifacts/{name}"] = http.get(f"/api/v1/jobs/{name}/artifacts").json()
        for name in seeded["experiments"]:
            out[f"experiment/{name}"] = http.get(f"/api/v1/experiments/{name}").json()
        volumes = {v["name"]: v for v in http.get("/api/v1/volumes").json()}
        for name in seeded["volumes"]:
            out[f"volume/{name}"] = volumes.get(name)
    return out


def restart_without_capacity(master, master_factory):
    """Same home, a node offering 0 CPU: whatever the fuzzer submits is Unschedulable, nothing runs."""
    from kubetrain.server.daemon import stop_master
    from kubetrain.settings import load_settings

    stop_master(load_settings(master.env))
    (master.home / "config.yaml").write_text("node:\n  cpu: '1'\n  reservedCpu: '1'\n")
    fresh = master_factory()
    assert fresh.client.nodes()[0].cpu_millis == 0
    return fresh


# -- checks --------------------------------------------------------------------------------

def check_response(case, response: requests.Response) -> None:
    where = f"{case.method} {case.formatted_path}"
    status = response.status_code
    assert status < 500, f"{where} -> {status}: {response.text[:500]}"
    kind = response.headers.get("content-type") or ""
    kind = kind[0] if isinstance(kind, list) and kind else kind  # schemathesis keeps every value of a header
    if status < 400 and str(kind).startswith("application/gzip"):
        return  # an archive (a snapshot, the SDK): bytes, nothing to read as text
    assert "Traceback" not in response.text, f"{where} leaked a traceback"
    if status < 400 or case.method.upper() == "HEAD":
        return
    try:
        body = response.json()
    except ValueError:
        raise AssertionError(f"{where} -> {status} with a non-JSON body: {response.text[:300]!r}") from None
    assert isinstance(body, dict), f"{where} -> {status}: {body!r}"
    assert isinstance(body.get("code"), str) and body["code"], f"{where} -> {status} without a code: {body}"
    message = body.get("message")
    assert isinstance(message, str) and message.strip(), f"{where} -> {status} without a message: {body}"
    assert message.strip().lower().rstrip(".") not in BARE_MESSAGES, f"{where} -> {status} names nothing: {body}"


def _real_names(seeded: dict[str, list[str]], operation) -> list[str]:
    """Real objects a case may point at instead of a random name (never for writes that add data)."""
    path, method = operation.path, operation.method.upper()
    if "{name}" not in path or method == "DELETE" or path.endswith("/metrics") and method == "POST":
        return []
    if path.startswith("/api/v1/jobs/"):
        return seeded["jobs"]
    if path.startswith("/api/v1/experiments/"):
        return seeded["experiments"]
    if path.startswith("/api/v1/volumes/") and method == "GET":
        return seeded["volumes"]
    return []


class Fuzzer:
    def __init__(self, url: str, seeded: dict[str, list[str]], auth: dict[str, str],
                 openapi: dict[str, Any] | None = None) -> None:
        self.openapi = openapi or {}
        self.url = url
        self.seeded = seeded
        self.session = requests.Session()
        self.session.headers.update(auth)
        self.calls: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.http_seconds = 0.0

    def call(self, case, real: str | None) -> requests.Response:
        if real is not None:
            case.path_parameters = {**(case.path_parameters or {}), "name": real}
        if isinstance(case.query, dict) and "follow" in case.query:
            case.query["follow"] = "false"  # a followed log waits for its job: not for a fuzzer
        started = time.monotonic()
        response = case.call(base_url=self.url, session=self.session, timeout=REQUEST_TIMEOUT)
        label = f"{case.method.upper()} {case.operation.path}"
        self.http_seconds += time.monotonic() - started
        self.calls[label] = self.calls.get(label, 0) + 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        if case.method.upper() == "POST" and case.operation.path == "/api/v1/experiments" and response.status_code == 201:
            # A fuzzed sweep may ask for 10,000 trials: stop it at once, it has done its part.
            name = response.json()["name"]
            self.session.post(f"{self.url}/api/v1/experiments/{name}/cancel", timeout=REQUEST_TIMEOUT)
        return response

    def check_declared(self, case, response: requests.Response) -> None:
        """The OpenAPI document says what the master answers: each status is declared for its operation."""
        operation = self.openapi.get("paths", {}).get(case.operation.path, {}).get(case.method.lower(), {})
        status = response.status_code
        if status == 405:  # a method the path does not have: the answer says which it has
            assert response.headers.get("allow"), f"{case.method} {case.formatted_path} -> 405 without Allow"
            return
        assert str(status) in operation.get("responses", {}), (
            f"{case.method} {case.operation.path} answered {status}, which its OpenAPI entry does not declare")

    def run(self, operation, mode: GenerationMode) -> None:
        names = _real_names(self.seeded, operation)
        real = st.one_of(st.none(), st.none(), st.sampled_from(names)) if names else st.none()

        @settings(max_examples=API_EXAMPLES, deadline=None, database=None, derandomize=DERANDOMIZE,
                  phases=[Phase.explicit, Phase.generate], print_blob=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode), real=real)
        def fuzz(case, real) -> None:
            response = self.call(case, real)
            try:
                check_response(case, response)
                self.check_declared(case, response)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nreproduce with: {case.as_curl_command()}") from None

        fuzz()


# -- the test -------------------------------------------------------------------------------

def test_every_operation_survives_fuzzing_and_stored_jobs_stay_intact(master, master_factory, tmp_path: Path) -> None:
    seeded = seed(master, tmp_path)
    before = snapshot(master.url, seeded, master.auth)
    master = restart_without_capacity(master, master_factory)
    assert snapshot(master.url, seeded, master.auth) == before, "a restart changed what was stored"
    pid = master.master_pid()

    schema = schemathesis.openapi.from_url(f"{master.url}/openapi.json", timeout=REQUEST_TIMEOUT)
    operations = [result.ok() for result in schema.get_all_operations()]
    live = httpx.get(f"{master.url}/openapi.json").json()
    assert len(operations) == sum(len(v) for v in live["paths"].values()) >= 12

    fuzzer = Fuzzer(master.url, seeded, master.auth, live)
    failures: list[str] = []
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzzer.run(operation, mode)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing in this operation can be made invalid
            except Exception as exc:  # noqa: BLE001 - collect every operation's failure, report all
                failures.append(f"[{operation.method.upper()} {operation.path} {mode.value}] {exc}")
    elapsed = time.monotonic() - started
    print(f"\nfuzzed {len(operations)} operations with {sum(fuzzer.calls.values())} requests in {elapsed:.1f}s; "
          f"({fuzzer.http_seconds:.1f}s waiting for the master); statuses {dict(sorted(fuzzer.statuses.items()))}")
    assert not failures, "\n\n".join(failures)
    assert all(fuzzer.calls.get(f"{op.method.upper()} {op.path}") for op in operations), fuzzer.calls

    # Nothing stored before the run was touched, and the master is the same, healthy process.
    assert master.master_pid() == pid, "the master restarted (crashed?) during the fuzz run"
    after = snapshot(master.url, seeded, master.auth)
    changed = sorted(k for k in before if before[k] != after.get(k))
    assert not changed, f"the fuzz run changed stored data: {changed}"
    probe = master.client.submit({"metadata": {"name": "after-fuzz"}, "spec": {"command": ["true"]}})
    done = master.wait_state(probe.name, *TERMINAL, timeout=60)
    assert done.reason == "Unschedulable", "the reconcile loop no longer plans (a stored spec poisoned it?)"
    log = "".join((master.home / "run" / f).read_text(errors="replace")  # the log, and what went to stderr
                  for f in ("master.log", "master.out") if (master.home / "run" / f).exists())
    where = log.find("Traceback")
    assert where < 0, log[max(where - 300, 0):where + 4000]


def test_following_logs_of_finished_jobs_returns(master) -> None:
    """The one streaming endpoint, with follow=true, on the states a fuzzer cannot reach quickly."""
    master.client.submit({"metadata": {"name": "followed"}, "spec": {"command": [PYTHON, "-c", "print('x' * 10)"],
                                                                       "resources": {"cpu": "100m"}}})
    master.wait_state("followed", *TERMINAL)
    with httpx.Client(base_url=master.url, timeout=REQUEST_TIMEOUT, headers=master.auth) as http:
        assert http.get("/api/v1/jobs/followed/logs", params={"follow": "true"}).text.strip() == "x" * 10
        for attempt in ("1", "2", "0", "-1", "999999999999", "x"):
            response = http.get("/api/v1/jobs/followed/logs", params={"follow": "true", "attempt": attempt})
            assert response.status_code in (200, 404, 422), (attempt, response.status_code, response.text)
            if response.status_code != 200:
                assert set(response.json()) >= {"code", "message"}
        response = http.get("/api/v1/jobs/no-such-job/logs", params={"follow": "true"})
        assert response.status_code == 404 and response.json()["code"] == "not_found"


HOSTILE_BODIES = {
    "lone surrogate in an argument": b'{"spec": {"spec": {"command": ["\\ud800"]}}}',
    "lone surrogate in provenance": b'{"spec": {"spec": {"command": ["true"]}}, "provenance": {"submitter": "\\udfff"}}',
    "lone surrogate in a param": b'{"spec": {"spec": {"command": ["true"], "params": {"a": ["\\udc00x"]}}}}',
    "lone surrogate in a label key": b'{"spec": {"metadata": {"labels": {"\\ud800": "x"}}, "spec": {"command": ["true"]}}}',
    "NaN": b'{"spec": {"spec": {"command": ["true"], "params": {"a": NaN}}}}',
    "Infinity": b'{"spec": {"spec": {"command": ["true"], "priority": Infinity}}}',
    "5000-digit number": b'{"spec": {"spec": {"command": ["true"], "priority": ' + b"9" * 5000 + b"}}}",
    "nesting 100000 deep": b'{"spec": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "truncated": b'{"spec": {"spec": ',
    "not UTF-8": b'{"spec": "\xff\xfe"}',
    "a list": b"[1, 2]",
    "empty": b"",
    "null": b"null",
}


def test_hostile_json_bodies_are_clean_4xx_and_store_nothing(master) -> None:
    """Bodies no JSON-schema generator writes: raw bytes, escapes Python accepts and UTF-8 refuses."""
    problems = []
    with httpx.Client(base_url=master.url, timeout=REQUEST_TIMEOUT, headers=master.auth) as http:
        for case, content in HOSTILE_BODIES.items():
            for path in ("/api/v1/jobs", "/api/v1/experiments", "/api/v1/jobs/nobody/metrics", "/api/v1/volumes"):
                response = http.post(path, content=content, headers={"content-type": "application/json"})
                try:
                    assert 400 <= response.status_code < 500
                    body = response.json()
                    assert body["code"] and body["message"].strip().lower() not in BARE_MESSAGES
                except (AssertionError, ValueError, KeyError):
                    problems.append(f"{case}: POST {path} -> {response.status_code} {response.text[:200]}")
        listed = http.get("/api/v1/jobs")
        assert listed.status_code == 200 and listed.json() == [], listed.text[:300]
    assert not problems, "\n".join(problems)


TRAVERSALS = [
    "..%2F..%2Fkubetrain.db", "%2e%2e/%2e%2e/kubetrain.db", "..%2f..%2f..%2f..%2fetc%2fpasswd", "%2Fetc%2Fpasswd",
    "a%00b", "model.txt%00", "%2e%2e", "%2e", "sub%2F..%2F..%2F..%2Frun%2Fmaster.json", "%5c..%5c..%5cetc",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fshadow",
]


def test_file_paths_never_leave_their_folder(master) -> None:
    master.client.submit({"metadata": {"name": "files"}, "spec": {"command": ["true"], "resources": {"cpu": "100m"}}})
    master.wait_state("files", *TERMINAL)
    assert httpx.post(f"{master.url}/api/v1/volumes", json={"name": "vol"}, headers=master.auth).status_code == 201
    problems = []
    for path in TRAVERSALS:
        for route in (f"/api/v1/jobs/files/artifacts/{path}", f"/api/v1/volumes/vol/files/{path}"):
            # Dots percent-encoded: HTTP clients drop literal ``..`` segments before sending.
            response = httpx.get(master.url + route, timeout=REQUEST_TIMEOUT, headers=master.auth)
            if (response.status_code not in (404, 422) or "root:" in response.text or "SQLite" in response.text
                    or response.json().get("code") not in ("not_found", "invalid_spec")):
                problems.append(f"GET {route} -> {response.status_code} {response.text[:200]}")
    assert not problems, "\n".join(problems)
