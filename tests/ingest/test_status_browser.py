"""The status page in a real headless Chromium (Debian's, driven by its chromedriver through
Selenium; nothing is downloaded): it loads with basic auth, shows a failed ledger row made by
the test, and its re-drive button puts the row back to waiting.

Locally the test is skipped when Chromium or chromedriver is missing; with ``CI=true`` it
fails instead (``.ci/run`` installs them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from emulators.server import LoopbackServer
from ingest.app import create_app
from ledger import Recording, migrate
from tests.fixtures.callrec import base_env, settings_from, wait_for
from tests.fixtures.ledger_rows import failed_row

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CHROMIUM = Path(os.environ.get("CALLREC_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CALLREC_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
USER, PASSWORD = "ops", "browser-test-password"


def require_chromium() -> None:
    """Skip (locally) or fail (CI=true) when Debian's Chromium or chromedriver is missing."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not installed "
        "(apt-get install chromium chromium-driver; .ci/run does)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: the browser test must run)")
    pytest.skip(message)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless Chromium with a new profile; quit (browser and driver) afterwards."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never look anything up
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """(base URL, ledger sessions) of the web app served over HTTP on loopback."""
    settings = settings_from(base_env(tmp_path, CALLREC_STATUS_BASIC_AUTH=f"{USER}:{PASSWORD}"))
    migrate(settings.database_url)
    app = create_app(settings)
    with LoopbackServer(app) as server:
        yield server.url, app.extensions["callrec"].sessions


def test_the_page_loads_shows_a_failure_and_its_re_drive_button_works(
    browser: Any, web: tuple[str, Any]
) -> None:
    from selenium.webdriver.common.by import By

    url, sessions = web
    row_id = failed_row(sessions, "recording not found (404 from the provider API)")

    browser.get(url.replace("://", f"://{USER}:{PASSWORD}@", 1) + "/status")

    assert browser.title == "callrec status"
    failure = browser.find_element(By.ID, f"failure-{row_id}")
    assert "recording not found (404 from the provider API)" in failure.text
    assert "telnyx" in failure.text

    failure.find_element(By.ID, f"redrive-{row_id}").click()

    outcome = wait_for(
        lambda: browser.find_elements(By.ID, "outcome"), 20, 0.1, "the re-drive outcome"
    )
    assert f"Recording {row_id} is waiting again" in outcome[0].text
    assert browser.find_elements(By.ID, f"failure-{row_id}") == []
    with sessions() as session:
        row = session.execute(select(Recording).where(Recording.id == row_id)).scalar_one()
    assert (row.state, row.attempts) == ("accepted", 0)
