"""``POST /webhooks/quo`` through the shared view: statuses for each scheme and the ledger rows."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from emulators.quo import QuoWebhookSender
from ingest.app import create_app
from ledger import migrate
from tests.fixtures.callrec import base_env, settings_from

SENDER = QuoWebhookSender(signing_key=b"\x05" * 32, webhook_secret=b"\x06" * 24)
BODY = SENDER.call_event_body(event_id="EVroute1")


def client(tmp_path: Path, **env: str) -> FlaskClient:
    settings = settings_from(base_env(tmp_path, **env))
    migrate(settings.database_url)
    return create_app(settings).test_client()


@pytest.fixture
def quo(tmp_path: Path) -> FlaskClient:
    return client(
        tmp_path,
        CALLREC_QUO_SIGNING_KEY=SENDER.signing_key_b64,
        CALLREC_QUO_WEBHOOK_SECRET=SENDER.webhook_secret,
    )


@pytest.mark.parametrize("scheme", ["legacy", "standard"])
def test_signed_delivery_is_accepted_then_a_duplicate(quo: FlaskClient, scheme: str) -> None:
    headers = SENDER.headers(BODY, scheme)  # type: ignore[arg-type]
    first = quo.post("/webhooks/quo", data=BODY, headers=headers)
    again = quo.post("/webhooks/quo", data=BODY, headers=headers)
    assert (first.status_code, first.get_json()["status"]) == (200, "accepted")
    assert (again.status_code, again.get_json()["status"]) == (200, "duplicate")


def test_valid_signature_with_foreign_content_type_is_415(quo: FlaskClient) -> None:
    headers = {**SENDER.legacy_headers(BODY), "content-type": "application/x-www-form-urlencoded"}
    assert quo.post("/webhooks/quo", data=BODY, headers=headers).status_code == 415


def test_bad_signature_is_401_and_ignored_event_is_200(quo: FlaskClient) -> None:
    assert (
        quo.post("/webhooks/quo", data=BODY, headers=SENDER.legacy_headers(b"{}")).status_code
        == 401
    )
    other = SENDER.call_event_body(event_type="call.ringing")
    response = quo.post("/webhooks/quo", data=other, headers=SENDER.standard_headers(other))
    assert (response.status_code, response.get_json()["status"]) == (200, "ignored")


def test_unconfigured_secret_is_503_never_an_accept(tmp_path: Path) -> None:
    bare = client(tmp_path, CALLREC_QUO_SIGNING_KEY=SENDER.signing_key_b64)
    response = bare.post("/webhooks/quo", data=BODY, headers=SENDER.standard_headers(BODY))
    assert response.status_code == 503
