"""The dashboard over real HTTP: browser identity (cookie, link, CSRF), local vendor files, escaping."""

from __future__ import annotations

import re

import httpx

from kubetrain.server.auth import SESSION_COOKIE
from tests.conftest import PYTHON, wait_until


def _login(master) -> httpx.Client:
    """A cookie-only client (no Authorization header), logged in with the admin's token."""
    browser = httpx.Client(base_url=master.url, follow_redirects=False)
    answer = browser.post("/dashboard/login", json={"token": master.token, "next": "/dashboard/jobs/x"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["next"] == "/dashboard/jobs/x"
    return browser


def _csrf(page: str) -> str:
    found = re.search(r'<meta name="kubetrain-csrf" content="([0-9a-f]{64})">', page)
    assert found, page[:500]
    return found.group(1)


def test_a_token_login_sets_a_strict_httponly_cookie_and_changes_need_the_pages_csrf_header(master) -> None:
    anonymous = httpx.Client(base_url=master.url, follow_redirects=False)
    away = anonymous.get("/dashboard")
    assert away.status_code == 303 and away.headers["location"] == "/dashboard/login?next=/dashboard"
    assert anonymous.get("/").headers["location"] == "/dashboard"
    refused = anonymous.post("/dashboard/login", json={"token": "kt_nope_nope"})
    assert refused.status_code == 401 and "kubetrain token create" in refused.json()["message"]
    assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")

    browser = _login(master)
    header = next(h for h in browser.post("/dashboard/login", json={"token": master.token}).headers
                  .get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    attributes = {part.strip().lower() for part in header.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/"} <= attributes and "secure" not in attributes
    assert master.token not in header
    cookie = browser.cookies[SESSION_COOKIE]
    page = browser.get("/dashboard")
    assert page.status_code == 200 and 'data-testid="jobs-table"' in page.text
    csrf = _csrf(page.text)
    assert browser.get("/api/v1/whoami").json()["role"] == "admin"

    master.cli("run", "--name", "sleeper", "--", PYTHON, "-c", "import time; time.sleep(60)", check=True)
    path = "/api/v1/jobs/sleeper/cancel"
    for headers in ({}, {"X-Kubetrain-CSRF": "0" * 64}):
        forged = browser.post(path, headers=headers)
        assert forged.status_code == 403 and "X-Kubetrain-CSRF" in forged.json()["message"].replace("x-kubetrain-csrf",
                                                                                                  "X-Kubetrain-CSRF")
    assert master.client.get_job("sleeper").state in ("Queued", "Running")
    other_site = browser.post(path, headers={"X-Kubetrain-CSRF": csrf, "Origin": "http://evil.example"})
    assert other_site.status_code == 403
    assert browser.post(path, headers={"X-Kubetrain-CSRF": csrf}).status_code == 200
    master.wait_state("sleeper", "Cancelled")

    assert browser.post("/dashboard/logout").status_code == 403  # logging out is a change too
    assert browser.post("/dashboard/logout", headers={"X-Kubetrain-CSRF": csrf}).status_code == 200
    stale = httpx.Client(base_url=master.url, follow_redirects=False, cookies={SESSION_COOKIE: cookie})
    assert stale.get("/api/v1/whoami").status_code == 401
    again = stale.get("/dashboard/jobs/sleeper")
    assert again.status_code == 303 and "next=/dashboard/jobs/sleeper" in again.headers["location"]
    assert SESSION_COOKIE in again.headers.get("set-cookie", "")  # the dead cookie is cleared
    foreign = httpx.Client(base_url=master.url, follow_redirects=False, cookies={SESSION_COOKIE: "made-up"})
    assert foreign.get("/api/v1/jobs").status_code == 401
    assert foreign.get("/dashboard").status_code == 303


def test_a_login_link_works_once_and_the_cli_prints_it_for_the_masters_tcp_address(master) -> None:
    link = master.client._call("POST", "/api/v1/dashboard/links")
    assert link["path"].startswith("/dashboard/login/link?code=") and link["expires_in"] == 60
    browser = httpx.Client(base_url=master.url, follow_redirects=False)
    opened = browser.get(link["path"])
    assert opened.status_code == 303 and opened.headers["location"] == "/dashboard"
    assert "samesite=strict" in opened.headers["set-cookie"].lower()
    assert browser.get("/api/v1/whoami").status_code == 200
    twice = httpx.Client(base_url=master.url, follow_redirects=False).get(link["path"])
    assert twice.status_code == 401 and "already used" in twice.text and SESSION_COOKIE not in twice.cookies

    printed = master.cli("dashboard", "--url-only", check=True).stdout.strip()
    assert printed.startswith(master.url + "/dashboard/login/link?code="), printed
    other = httpx.Client(follow_redirects=False)
    assert other.get(printed).status_code == 303
    assert other.get(master.url + "/api/v1/whoami").status_code == 200


def test_docs_and_charts_come_from_installed_packages_not_a_cdn(master) -> None:
    plain = httpx.Client(base_url=master.url, follow_redirects=False)
    docs = plain.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    urls = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)', docs.text) + re.findall(r"url:\s*'([^']+)'", docs.text)
    assert urls and all(u.startswith("/") for u in urls), urls
    assert "cdn" not in docs.text.lower() and "https://" not in docs.text
    for path in ("/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"):
        assert plain.get(path).status_code == 200, path
    assert plain.get("/redoc").status_code == 404
    plotly = plain.get("/dashboard/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    browser = _login(master)
    master.cli("run", "--name", "shown", "--", PYTHON, "-c", "print(1)", check=True)
    page = browser.get("/dashboard/jobs/shown").text
    for url in re.findall(r'(?:src|href)\s*=\s*"([^"]+)"', page):
        assert url.startswith("/"), url
    assert browser.get("/dashboard/static/job.js").status_code == 200


def test_pages_escape_what_users_wrote(master) -> None:
    evil = "<script>alert(1)</script>"
    master.cli("run", "--name", "escaped", "-p", f"x={evil}", "--", PYTHON, "-c", "print('<b>hi</b>')", evil,
               check=True)
    wait_until(lambda: master.client.get_job("escaped").attempts, what="an attempt")
    browser = _login(master)
    page = browser.get("/dashboard/jobs/escaped")
    assert page.status_code == 200
    assert evil not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    missing = browser.get("/dashboard/jobs/%3Cscript%3Ealert(1)")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "<script>alert" not in missing.text and "&lt;script&gt;alert(1)" in missing.text
    nxt = browser.get("/dashboard/login", params={"next": '"><script>alert(1)</script>'}).text
    assert evil not in nxt
    assert 'data-next="/dashboard"' in httpx.get(master.url + "/dashboard/login?next=https://evil.example").text
