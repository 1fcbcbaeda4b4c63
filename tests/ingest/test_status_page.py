"""``/status``: off without its setting, basic auth, what it shows (escaped, redacted), and the
re-drive form with its CSRF token."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config.settings import ConfigError
from ingest.app import create_app
from ledger import Recording, RecordingEvent, migrate
from tests.fixtures.callrec import base_env, settings_from
from tests.fixtures.ledger_rows import failed_row, stored_row

CREDENTIALS = "ops:s3cret:with-colon"
AUTH = {"Authorization": "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()}
HOSTILE_REASON = "<script>alert(1)</script> GET https://a.example/x.mp3?sig=SECRET +15551234567"


def make_app(tmp_path: Path, **overrides: str) -> Flask:
    settings = settings_from(base_env(tmp_path, **overrides))
    migrate(settings.database_url)
    return create_app(settings)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, CALLREC_STATUS_BASIC_AUTH=CREDENTIALS)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def sessions(app: Flask) -> sessionmaker[Session]:
    return app.extensions["callrec"].sessions  # type: ignore[no-any-return]


def state_of(app: Flask, row_id: int) -> str:
    with sessions(app)() as session:
        return str(session.execute(select(Recording.state).where(Recording.id == row_id)).scalar())


def redrive_form(page: str, row_id: int) -> tuple[str, str]:
    """(action, csrf token) of the re-drive form of ``row_id`` in the page."""
    match = re.search(
        rf'<form method="post" action="([^"]*/recordings/{row_id}/redrive)">\s*'
        r'<input type="hidden" name="csrf_token" value="([^"]+)">',
        page,
    )
    assert match, page
    return match.group(1), match.group(2)


def test_without_the_setting_the_page_is_off_with_a_clear_404(tmp_path: Path) -> None:
    client = make_app(tmp_path).test_client()
    for response in (
        client.get("/status", headers=AUTH),
        client.post("/status/recordings/1/redrive", headers=AUTH),
    ):
        assert response.status_code == 404
        assert "CALLREC_STATUS_BASIC_AUTH=user:password" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()},
        {"Authorization": "Basic " + base64.b64encode(b"other:s3cret:with-colon").decode()},
        {"Authorization": "Bearer s3cret"},
    ],
    ids=["none", "wrong-password", "wrong-user", "not-basic"],
)
def test_wrong_or_missing_credentials_get_401_with_a_challenge(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.get("/status", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Basic realm="callrec status"')
    assert client.post("/status/recordings/1/redrive", headers=headers).status_code == 401


def test_the_page_shows_accounts_and_failures_escaped_and_redacted(
    app: Flask, client: FlaskClient
) -> None:
    failed = failed_row(sessions(app), HOSTILE_REASON, key="rec-+15557654321")
    stored_row(sessions(app), provider="twilio", account="east")

    response = client.get("/status", headers=AUTH)

    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'data-provider="telnyx" data-account="default"' in page
    assert 'data-provider="twilio" data-account="east"' in page
    assert 'data-provider="quo" data-account="default"' in page  # configured, no rows yet
    row = page[page.index(f'id="failure-{failed}"') :]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in row and "<script>" not in page
    assert "SECRET" not in page and "5551234567" not in page and "7654321" not in page
    assert "https://a.example/x.mp3?[redacted]" in row
    assert "s3cret" not in page
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


def test_the_re_drive_button_puts_the_row_back_to_waiting(app: Flask, client: FlaskClient) -> None:
    failed = failed_row(sessions(app), "recording not found (404)")
    action, token = redrive_form(client.get("/status", headers=AUTH).get_data(as_text=True), failed)

    response = client.post(action, data={"csrf_token": token}, headers=AUTH)

    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/status?redriven={failed}")
    assert state_of(app, failed) == "accepted"
    with sessions(app)() as session:
        detail = session.execute(
            select(RecordingEvent.detail).order_by(RecordingEvent.id.desc()).limit(1)
        ).scalar()
    assert detail == "re-driven: status page, by ops"
    page = client.get(response.headers["Location"], headers=AUTH).get_data(as_text=True)
    assert f"Recording {failed} is waiting again" in page
    assert "No failed recordings." in page
    again = client.post(action, data={"csrf_token": token}, headers=AUTH)
    assert again.headers["Location"].endswith(f"/status?unchanged={failed}")


def test_a_re_drive_without_a_valid_token_changes_nothing(app: Flask, client: FlaskClient) -> None:
    first = failed_row(sessions(app), "boom")
    second = failed_row(sessions(app), "boom")
    page = client.get("/status", headers=AUTH).get_data(as_text=True)
    _, token_of_first = redrive_form(page, first)
    issued, _, mac = token_of_first.partition(".")
    for data, target in (
        ({}, first),
        ({"csrf_token": "nonsense"}, first),
        ({"csrf_token": f"{int(issued) - 13 * 3600}.{mac}"}, first),  # expired
        ({"csrf_token": token_of_first}, second),  # another row's token
    ):
        response = client.post(f"/status/recordings/{target}/redrive", data=data, headers=AUTH)
        assert response.status_code == 403
        assert "reload the status page" in response.get_data(as_text=True)
    assert (state_of(app, first), state_of(app, second)) == ("failed", "failed")


@pytest.mark.parametrize("raw", ["ops", "ops:", ":secret"])
def test_a_malformed_setting_stops_start_up_naming_it(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError, match="CALLREC_STATUS_BASIC_AUTH"):
        settings_from(base_env(tmp_path, CALLREC_STATUS_BASIC_AUTH=raw))
