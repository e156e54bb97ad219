"""The dashboard's Experiment, Queue, Nodes and Users pages in a real headless Chromium (issue 13, part 2).

A real master runs a small grid sweep submitted with the CLI; the browser signs in through a one-time login
link (what ``kubetrain dashboard`` opens) and works the pages as a person would: it clicks the objective
column's heading and reads the order the table shows.  Waits are on conditions, never sleeps; each test
leaves a screenshot in ``$KUBETRAIN_TEST_ARTIFACTS`` (default ``test-artifacts/``; the ``browser`` fixture
of ``conftest.py``, which also skips the tests, saying why, where Chromium is missing).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import PYTHON, wait_until

pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import artifacts_dir

TRIAL = """
import os, time
import kubetrain
p = kubetrain.params()
while p.get("gate") and not os.path.exists(p["gate"]):
    time.sleep(0.05)
for step in range(1, 4):
    kubetrain.report(step=step, score=float(p["quality"]) * step)
"""
QUALITIES = [3, 10, 1, 7, 2]


def snap(driver, name: str) -> None:
    """A screenshot of the page now, beside the test's own (a test that visits several pages keeps each)."""
    driver.save_screenshot(str(artifacts_dir() / f"{name}.png"))


def wait(driver, condition, what: str, timeout: float = 30):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d), message=f"waiting for {what}")


def sign_in(driver, master, token: str | None = None) -> None:
    """Open a one-time login link for the token's user (the admin by default), as ``kubetrain dashboard`` does."""
    headers = {"Authorization": f"Bearer {token}"} if token else master.auth
    with httpx.Client(base_url=master.url, headers=headers) as http:
        link = http.post("/api/v1/dashboard/links")
        assert link.status_code == 201, link.text
    driver.get(master.url + link.json()["path"])
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=whoami]"), "the signed-in layout")


def submit_sweep(master, tmp_path: Path, name: str, qualities: list[int], gate: Path | None = None) -> None:
    """A grid sweep over ``qualities`` (score = quality x step, 3 steps), submitted with the CLI; with ``gate``,
    its trials wait for that file before reporting.  The code snapshot is a folder of its own: ``tmp_path`` also
    holds the browser's profile (its sockets are no code)."""
    folder = tmp_path / f"{name}-code"
    folder.mkdir()
    (folder / "trial.py").write_text(TRIAL)
    document = {"apiVersion": "kubetrain/v1", "kind": "Experiment", "metadata": {"name": name}, "spec": {
        "algorithm": "grid", "parallelism": 3,
        "template": {"command": [PYTHON, "trial.py"], "resources": {"cpu": "100m", "memory": "256Mi"},
                     "params": {"gate": str(gate)} if gate else {}},
        "objective": {"metric": "score", "goal": "maximize"},
        "parameters": [{"name": "quality", "type": "categorical", "values": qualities},
                       {"name": "opt", "type": "categorical", "values": ["<b>sgd</b>"]}]}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    master.cli("sweep", str(path), check=True, cwd=folder)


def run_sweep(master, tmp_path: Path, name: str = "gridsweep"):
    submit_sweep(master, tmp_path, name, QUALITIES)
    return wait_until(lambda: (e := master.client.get_experiment(name)).state != "Running" and e, timeout=180,
                      what=f"experiment {name} to end")


def column(driver, key: str) -> list[str]:
    """The ``data-sort`` values of a trials-table column, top to bottom, as the page shows them now."""
    return [cell.get_attribute("data-sort")
            for cell in driver.find_elements(By.CSS_SELECTOR, f"[data-testid=trials-table] tbody td[data-col={key}]")]


def test_the_experiment_table_sorts_by_the_objective(master, tmp_path: Path, browser) -> None:
    record = run_sweep(master, tmp_path)
    trials = [(t.job, t.state, t.reason, master.client.get_job(t.job).message) for t in record.trials]
    assert record.state == "Succeeded" and len(record.trials) == len(QUALITIES), (record.message, trials)
    best = next(t for t in record.trials if t.trial == record.best_trial)
    assert best.objective == 3 * max(QUALITIES)

    sign_in(browser, master)
    browser.find_element(By.CSS_SELECTOR, "[data-testid=nav-experiments]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=experiment-row-gridsweep] a"),
         "the experiments list")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=experiment-row-gridsweep] a").click()
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "ready",
         "the charts to be drawn")

    # Sort by trial number first, so the objective's order below is the click's doing, not the page's.
    browser.find_element(By.CSS_SELECTOR, "[data-testid=trials-col-trial]").click()
    wait(browser, lambda d: d.find_element(By.ID, "trials").get_attribute("data-sorted-by") == "trial",
         "the table sorted by trial")
    trials = [int(v) for v in column(browser, "trial")]
    assert trials == sorted(trials)

    objective = browser.find_element(By.CSS_SELECTOR, "[data-testid=trials-col-objective]")
    assert objective.text.startswith("score")
    objective.click()
    wait(browser, lambda d: d.find_element(By.ID, "trials").get_attribute("data-sorted-by") == "objective",
         "the table sorted by the objective")
    ascending = [float(v) for v in column(browser, "objective")]
    assert ascending == sorted(3.0 * q for q in QUALITIES)  # numeric: 30 after 9, not before it
    assert objective.get_attribute("aria-sort") == "ascending"

    objective.click()
    wait(browser, lambda d: d.find_element(By.ID, "trials").get_attribute("data-sort-dir") == "descending",
         "the objective sorted the other way")
    descending = [float(v) for v in column(browser, "objective")]
    assert descending == sorted(ascending, reverse=True)
    top = browser.find_element(By.CSS_SELECTOR, "[data-testid=trials-table] tbody tr")
    assert top.get_attribute("data-testid") == f"trial-row-{best.trial}"
    assert "best-trial" in top.get_attribute("class") and "★" in top.text

    # A parameter value is shown as text, never as markup.
    assert "<b>sgd</b>" in browser.find_element(By.CSS_SELECTOR, "[data-testid=trials-table] tbody").text
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=trials-table] tbody b")

    # The charts: objective over trials with the best starred, parameters vs objective, overlaid curves.
    for chart in ("chart-objective", "chart-parcoords", "chart-curves"):
        assert browser.find_elements(By.CSS_SELECTOR, f"#{chart} svg.main-svg"), chart
    curves = browser.find_element(By.ID, "chart-curves")
    drawn = int(curves.get_attribute("data-curves"))
    assert drawn == len(QUALITIES)  # every trial is among the best five
    browser.find_element(By.CSS_SELECTOR, f"[data-testid=overlay-{best.trial}]").click()
    wait(browser, lambda d: d.find_element(By.ID, "chart-curves").get_attribute("data-curves") == str(drawn - 1),
         "the untick to take the best trial's curve off")
    browser.find_element(By.CSS_SELECTOR, f"[data-testid=overlay-{best.trial}]").click()
    wait(browser, lambda d: d.find_element(By.ID, "chart-curves").get_attribute("data-curves") == str(drawn),
         "the tick to put it back")

    with master.http() as http:
        curve = http.get(f"/dashboard/experiments/gridsweep/curves/{best.trial}").json()
        assert curve["steps"] == [1, 2, 3] and curve["values"] == [best.objective / 3 * s for s in (1, 2, 3)]
        assert http.get("/dashboard/experiments/gridsweep/curves/99").status_code == 404
        missing = http.get("/dashboard/experiments/nosuch")
        assert missing.status_code == 404 and "No experiment nosuch" in missing.text
    with httpx.Client(base_url=master.url) as anonymous:  # no session: the login page, not the data
        assert anonymous.get("/dashboard/experiments/gridsweep").status_code == 303


def test_a_running_experiments_page_says_when_trials_finish(master, tmp_path: Path, browser) -> None:
    go = tmp_path / "go"
    submit_sweep(master, tmp_path, "gated", [1, 2], gate=go)
    wait_until(lambda: master.client.get_experiment("gated").counts.get("running") == 2, timeout=60,
               what="both trials running")
    sign_in(browser, master)
    browser.get(master.url + "/dashboard/experiments/gated")
    wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-charts") == "ready", "the page")
    assert "No trial has reported score yet." in browser.find_element(By.ID, "chart-objective").text
    assert not browser.find_elements(By.CSS_SELECTOR, "input.overlay")  # nothing to overlay yet
    assert not browser.find_element(By.ID, "experiment-stale").is_displayed()
    go.touch()
    stale = wait(browser, lambda d: (e := d.find_element(By.ID, "experiment-stale")).is_displayed() and e,
                 "the page to say trials finished", timeout=60)
    assert "finished" in stale.text or "ended" in stale.text
    stale.find_element(By.TAG_NAME, "a").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-objective svg.main-svg"), "the reloaded charts")


def test_queue_nodes_and_users_pages(master, tmp_path: Path, browser) -> None:
    go = tmp_path / "go"
    gate = f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)"
    master.cli("run", "--name", "prep", "--no-snapshot", "--", "python", "-c", gate, check=True)
    master.cli("run", "--name", "train", "--after", "prep", "--no-snapshot", "--", "true", check=True)
    waiting = wait_until(lambda: (j := master.client.get_job("train")).message and "Running" in j.message and j,
                         what="train's wait reason naming prep as running")
    with master.http() as http:
        assert http.post("/api/v1/users", json={"name": "mia"}).status_code == 201
        member_token = http.post("/api/v1/tokens", json={"user": "mia", "description": "mia's laptop"}).json()["token"]
        old = http.post("/api/v1/tokens", json={"user": "mia", "description": "old key"}).json()

    sign_in(browser, master)
    browser.find_element(By.CSS_SELECTOR, "[data-testid=nav-queue]").click()
    row = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=queue-row-train]"), "train queued")[0]
    assert waiting.message in row.text and row.text.startswith("1 ")
    snap(browser, "insights_queue_page")

    browser.find_element(By.CSS_SELECTOR, "[data-testid=nav-nodes]").click()
    rows = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=nodes-table] tbody tr"), "nodes")
    assert any("prep#1" in r.text for r in rows), [r.text for r in rows]
    assert all("CPU" in r.text for r in rows)
    snap(browser, "insights_nodes_page")

    browser.find_element(By.CSS_SELECTOR, "[data-testid=nav-users]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=user-row-mia]"), "the users table")
    tokens = browser.find_element(By.CSS_SELECTOR, "[data-testid=tokens-table]").text
    assert "mia's laptop" in tokens and member_token not in browser.page_source
    snap(browser, "insights_users_page")
    # Revoking from the page: two clicks, then the API's DELETE with the session's CSRF header.
    revoke = browser.find_element(By.CSS_SELECTOR, f"[data-testid=revoke-{old['id']}]")
    revoke.click()
    wait(browser, lambda d: revoke.get_attribute("data-armed") == "true", "the revoke button to arm")
    revoke.click()
    wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, f"[data-testid=token-status-{old['id']}]").text
         == "revoked", "the token shown revoked")
    with httpx.Client(base_url=master.url, headers={"Authorization": f"Bearer {old['token']}"}) as http:
        assert http.get("/api/v1/whoami").status_code == 401

    # A member reads the queue but not the users: the Users page answers 403 in words.
    browser.delete_all_cookies()
    sign_in(browser, master, member_token)
    browser.get(master.url + "/dashboard/queue")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=queue-row-train]"), "mia's queue page")
    browser.get(master.url + "/dashboard/users")
    message = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid=error-message]"), "the refusal")
    assert "for admins" in message[0].text
    assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=tokens-table]")
    with httpx.Client(base_url=master.url, headers={"Authorization": f"Bearer {member_token}"}) as http:
        assert http.get("/dashboard/users").status_code == 403
    go.touch()
