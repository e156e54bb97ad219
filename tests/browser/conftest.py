"""Browser fixtures: real headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

Each test gets a fresh browser profile and leaves a screenshot of where it
ended in ``$KUBETRAIN_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the
repository), passed or failed, so CI keeps what the page looked like.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("KUBETRAIN_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KUBETRAIN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[2]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("KUBETRAIN_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser(request, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        pytest.skip(f"no headless browser: {' and '.join(missing)} missing; install Debian's chromium and "
                    "chromium-driver (`apt-get install chromium chromium-driver`, as .ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    # Its own folder, not the test's tmp_path: code snapshots taken from tmp_path must not carry the profile
    # (it holds a socket link, which a snapshot refuses).
    own = tmp_path_factory.mktemp("chromium")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1800", f"--user-data-dir={own / 'profile'}",
                     "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(own / "chromedriver.log")),
                              options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:120]
        try:
            driver.save_screenshot(str(artifacts_dir() / f"{name}.png"))
        finally:
            driver.quit()
            shutil.rmtree(own / "profile", ignore_errors=True)
