"""The dashboard in a real browser: log in, watch a CLI job appear, follow its log, see its chart, and a
member who may not cancel another user's job neither sees the button nor gets past the API."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import PYTHON

WAIT = 60


def _testid(name: str) -> tuple[str, str]:
    return By.CSS_SELECTOR, f'[data-testid="{name}"]'


def _log_in(driver, url: str, token: str) -> None:
    driver.get(url + "/dashboard")
    wait = WebDriverWait(driver, WAIT)
    field = wait.until(EC.visibility_of_element_located(_testid("token-input")))
    assert "/dashboard/login" in driver.current_url
    field.send_keys(token)
    driver.find_element(*_testid("login-submit")).click()
    wait.until(EC.presence_of_element_located(_testid("jobs-table")))
    wait.until(EC.text_to_be_present_in_element(_testid("list-status"), "jobs"))


def _open_by_link(driver, master) -> None:
    """Log in as the master's admin the way `kubetrain dashboard` does: a one-time link."""
    path = master.client._call("POST", "/api/v1/dashboard/links")["path"]
    driver.get(master.url + path)
    WebDriverWait(driver, WAIT).until(EC.presence_of_element_located(_testid("jobs-table")))


def test_log_in_and_a_job_submitted_from_the_cli_appears_without_a_reload(master, browser) -> None:
    _log_in(browser, master.url, master.token)
    assert browser.find_element(*_testid("whoami")).text.endswith("(admin)")
    browser.execute_script("window.__notReloaded = true;")
    master.cli("run", "--name", "from-cli", "--", PYTHON, "-c", "import time; time.sleep(60)", check=True)
    wait = WebDriverWait(browser, WAIT)
    row = wait.until(EC.presence_of_element_located(_testid("job-row-from-cli")))
    assert browser.execute_script("return window.__notReloaded === true;"), "the page reloaded"
    assert "from-cli" in row.text
    # The owner sees Cancel on a job that runs; the API is the same one the CLI uses.
    wait.until(EC.element_to_be_clickable(_testid("cancel-from-cli"))).click()
    wait.until(EC.text_to_be_present_in_element(_testid("job-state-from-cli"), "Cancelled"))
    assert master.client.get_job("from-cli").state == "Cancelled"


def test_the_job_page_streams_its_log_as_the_job_prints(master, browser, tmp_path) -> None:
    # Ten lines, then the job waits for the test's go-ahead, then 65 more: what the page shows before the
    # go-ahead was streamed while the job ran, not read once at its end.
    go = tmp_path / "go"
    program = ("import os, time\nfor i in range(75):\n    print(f'line {i:03d}', flush=True)\n"
               f"    while i == 9 and not os.path.exists({str(go)!r}):\n        time.sleep(0.05)\n")
    master.cli("run", "--name", "printer", "--no-snapshot", "--", PYTHON, "-c", program, check=True)
    _open_by_link(browser, master)
    browser.get(master.url + "/dashboard/jobs/printer")
    wait = WebDriverWait(browser, WAIT, poll_frequency=0.1)
    wait.until(EC.text_to_be_present_in_element(_testid("log"), "line 009"))
    assert master.client.get_job("printer").state == "Running"
    assert "line 010" not in browser.find_element(*_testid("log")).text
    go.touch()
    wait.until(EC.text_to_be_present_in_element(_testid("log"), "line 074"))
    wait.until(EC.text_to_be_present_in_element(_testid("job-state"), "Succeeded"))
    lines = browser.find_element(*_testid("log")).text.splitlines()
    assert lines == [f"line {i:03d}" for i in range(75)]  # every line once, in order


def test_a_job_that_reports_metrics_gets_a_drawn_chart(master, browser) -> None:
    program = ("import kubetrain, time\nfor step in range(15):\n    kubetrain.report(step, loss=1.0 / (step + 1))\n"
               "    time.sleep(0.05)\nkubetrain.flush()\n")
    master.cli("run", "--name", "charted", "--", PYTHON, "-c", program, check=True)
    _open_by_link(browser, master)
    browser.get(master.url + "/dashboard/jobs/charted")
    wait = WebDriverWait(browser, WAIT)
    wait.until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, '[data-testid="metrics-chart"] svg.main-svg .scatterlayer .trace')))
    wait.until(EC.text_to_be_present_in_element(_testid("metrics-status"), "loss"))
    points = browser.execute_script(
        "const d = document.getElementById('metrics-chart').data; return d ? d[0].x.length : 0;")
    assert points >= 1


def test_a_member_sees_no_cancel_button_on_another_users_job_and_the_api_refuses_it(master, browser) -> None:
    master.cli("user", "add", "dana", "--uid", "65534", check=True)
    token = master.cli("token", "create", "--user", "dana", "--expires", "2h", check=True).stdout.strip()
    master.cli("run", "--name", "admins-job", "--", PYTHON, "-c", "import time; time.sleep(60)", check=True)
    _log_in(browser, master.url, token)
    assert browser.find_element(*_testid("whoami")).text.startswith("dana (member)")
    wait = WebDriverWait(browser, WAIT)
    row = wait.until(EC.presence_of_element_located(_testid("job-row-admins-job")))
    assert not row.find_elements(*_testid("cancel-admins-job"))
    browser.get(master.url + "/dashboard/jobs/admins-job")
    wait.until(EC.presence_of_element_located(_testid("job-state")))
    assert not browser.find_elements(*_testid("cancel-button"))
    # The member's own cookie and the page's own CSRF header: the API still says no.
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const csrf = document.querySelector('meta[name="kubetrain-csrf"]').content;
        fetch('/api/v1/jobs/admins-job/cancel', {method: 'POST', credentials: 'same-origin',
                                                 headers: {'X-Kubetrain-CSRF': csrf}})
          .then(r => r.json().then(body => done([r.status, body.message])))
          .catch(e => done([0, String(e)]));
    """)
    assert status[0] == 403 and "only" in status[1], status
    assert master.client.get_job("admins-job").state in ("Queued", "Running")
    master.client.cancel("admins-job")
