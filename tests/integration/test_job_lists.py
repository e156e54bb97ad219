"""Job lists over HTTP through a real master: pages and continue tokens, the SDK's paging, the CLI's --limit.

The jobs ask for more CPU than any node has, so each ends ``Unschedulable`` at
once and nothing runs: the subject is the list, not the engine.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.conftest import wait_until

COUNT = 23


@pytest.fixture
def submitted(master) -> list[str]:
    """COUNT ended jobs, in submit order; labels team=a / team=b alternate."""
    names = []
    for i in range(COUNT):
        job = master.client.submit({"metadata": {"name": f"list-{i:02d}", "labels": {"team": "ab"[i % 2]}},
                                    "spec": {"command": ["true"], "resources": {"cpu": "4000"}}})
        names.append(job.name)
    wait_until(lambda: all(j.state == "Failed" for j in master.client.list_jobs(limit=None)), timeout=60,
               what="every job to end Unschedulable")
    return names


def pages(http: httpx.Client, **params) -> list[list[str]]:
    """Follow X-Continue to the end; the Link header names the same next page."""
    out: list[list[str]] = []
    token = None
    while True:
        response = http.get("/api/v1/jobs", params={**params, **({"continue": token} if token else {})})
        assert response.status_code == 200, response.text
        out.append([j["name"] for j in response.json()])
        token = response.headers.get("x-continue")
        if token is None:
            assert "link" not in response.headers
            return out
        link = response.headers["link"]
        assert link.endswith('>; rel="next"') and link.startswith("</api/v1/jobs?")
        via_link = http.get(link[1:link.index(">")])
        assert [j["name"] for j in via_link.json()] == [j["name"] for j in http.get(
            "/api/v1/jobs", params={**params, "continue": token}).json()]


def flat(listing: list[list[str]]) -> list[str]:
    return [name for page in listing for name in page]


def test_pages_over_http_follow_the_continue_token(master, submitted: list[str]) -> None:
    with master.http(timeout=30) as http:
        newest = pages(http, limit=5)
        assert [len(p) for p in newest] == [5, 5, 5, 5, 3]
        assert flat(newest) == submitted[::-1]
        assert flat(pages(http, limit=4, sort="oldest", selector="team=a")) == submitted[0::2]
        assert flat(pages(http, limit=6, sort="name", state="failed", selector="team!=a")) == submitted[1::2]
        assert pages(http, limit=COUNT) == [submitted[::-1]]  # exactly full: no token, no empty extra page
        summary = http.get("/api/v1/jobs", params={"view": "summary", "limit": 1}).json()[0]
        assert summary["spec"] == {"spec": {"resources": {"cpu": "4000", "memory": "2Gi", "gpu": 0}}}
        assert summary["provenance"]["submitter"] and summary["reason"] == "Unschedulable"


def test_bad_continue_tokens_and_limits_are_422s_naming_the_field(master, submitted: list[str]) -> None:
    with master.http(timeout=30) as http:
        token = http.get("/api/v1/jobs", params={"limit": 2}).headers["x-continue"]
        cases = {
            "continue": [{"continue": "bm90IGEgdG9rZW4"}, {"continue": "%%%"}, {"continue": "A" * 513},
                         {"continue": token, "sort": "oldest"}, {"continue": token, "selector": "team=a"}],
            "limit": [{"limit": 0}, {"limit": 10_001}, {"limit": "many"}],
            "sort": [{"sort": "size"}],
            "view": [{"view": "wide"}],
            "state": [{"state": "Runing"}],
        }
        for field, variants in cases.items():
            for params in variants:
                response = http.get("/api/v1/jobs", params=params)
                assert response.status_code == 422, (params, response.text)
                body = response.json()
                assert set(body) == {"code", "message", "details"} and body["code"] == "invalid_spec"
                # The store's checks say "continue: ..."; FastAPI's own (types, bounds) say "query.continue: ...".
                assert re.match(rf"(query\.)?{field}: ", body["message"]), (params, body)
        assert http.get("/api/v1/jobs", params={"limit": 10_000}).status_code == 200
        assert len(http.get("/api/v1/jobs", params={"limit": 1, "continue": token}).json()) == 1


def test_the_sdk_pages_transparently(master, submitted: list[str]) -> None:
    client = master.client
    assert [j.name for j in client.list_jobs(limit=None)] == submitted[::-1]
    assert [j.name for j in client.list_jobs(limit=7, sort="oldest")] == submitted[:7]
    assert [j.name for j in client.iter_jobs(page_size=4, selector="team=b")] == submitted[1::2][::-1]
    first = client.jobs_page(limit=10, page_size=3)
    assert [j.name for j in first.items] == submitted[::-1][:10] and first.continue_token
    rest = client.jobs_page(limit=None, page_size=3, continue_token=first.continue_token)
    assert [j.name for j in rest.items] == submitted[::-1][10:] and rest.continue_token is None


def test_the_cli_shows_the_newest_and_says_when_more_exist(master, submitted: list[str]) -> None:
    short = master.cli("get", "jobs", "--limit", "5", check=True)
    rows = short.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == submitted[::-1][:5]
    assert "more exist" in short.stderr and "--limit" in short.stderr
    everything = master.cli("ls", "--limit", "100", "--sort", "oldest", "-o", "json", check=True)
    assert [j["name"] for j in json.loads(everything.stdout)] == submitted
    assert "more exist" not in everything.stderr
    assert json.loads(everything.stdout)[0]["spec"]["spec"]["command"] == ["true"]  # -o json: full records
