"""The webhook view for Twilio-shaped form callbacks: the public URL behind proxies, statuses for
every kind of input, what lands in the ledger; and Telnyx TeXML callbacks on the Telnyx route."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.signing import SigningKey
from sqlalchemy import select

from emulators.telnyx import TelnyxWebhookSigner
from emulators.twilio import TwilioCallbackSigner
from ingest.app import create_app
from ledger import Recording, migrate
from tests.fixtures.callrec import base_env, settings_from

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads"
TOKEN = "f" * 32
SIGNER = TwilioCallbackSigner(TOKEN)
FORM = "application/x-www-form-urlencoded"
COMPLETED = (PAYLOADS / "twilio" / "recording.completed.form").read_bytes()
PUBLIC = "https://calls.example.com/webhooks/twilio"
SEEN = "http://localhost/webhooks/twilio"  # what the test client's app sees without help


def make_app(tmp_path: Path, **env: str) -> Flask:
    settings = settings_from(base_env(tmp_path, **env))
    migrate(settings.database_url)
    return create_app(settings)


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return make_app(tmp_path, CALLREC_TWILIO_AUTH_TOKEN=TOKEN).test_client()


def signed_for(url: str, body: bytes = COMPLETED) -> dict[str, str]:
    from urllib.parse import parse_qsl

    params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {"Content-Type": FORM, "X-Twilio-Signature": SIGNER.signature(url, params)}


def post(
    client: FlaskClient, headers: dict[str, str], body: bytes = COMPLETED, **kwargs: str
) -> tuple[int, dict[str, object]]:
    response = client.post("/webhooks/twilio", data=body, headers=headers, **kwargs)  # type: ignore[arg-type]
    return response.status_code, response.get_json()


def rows(app: Flask) -> list[Recording]:
    with app.extensions["callrec"].sessions() as session:
        return list(session.execute(select(Recording).order_by(Recording.id)).scalars())


FORWARDED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "calls.example.com",
    "X-Forwarded-For": "203.0.113.7",
}


def test_without_proxy_settings_the_url_the_app_sees_is_checked(client: FlaskClient) -> None:
    assert post(client, signed_for(SEEN))[0] == 200
    assert post(client, signed_for(PUBLIC))[0] == 401


def test_forwarded_headers_are_ignored_unless_trusted(client: FlaskClient) -> None:
    """Off by default: a client must not choose the URL its signature is checked against."""
    assert post(client, {**signed_for(PUBLIC), **FORWARDED})[0] == 401


def test_trusted_proxy_headers_rebuild_the_public_url(tmp_path: Path) -> None:
    app = make_app(tmp_path, CALLREC_TWILIO_AUTH_TOKEN=TOKEN, CALLREC_TRUST_PROXY_HOPS="1")
    client = app.test_client()
    assert post(client, {**signed_for(PUBLIC), **FORWARDED}) == (
        200,
        {"status": "accepted", "recordings": [1]},
    )
    with_port = {**FORWARDED, "X-Forwarded-Port": "8443"}
    other = COMPLETED.replace(b"RecordingStatus=completed", b"RecordingStatus=absent")
    url = "https://calls.example.com:8443/webhooks/twilio"
    assert post(client, {**signed_for(url, other), **with_port}, other)[0] == 200
    # As twilio-python's validator: the URL without its port also matches, another port never.
    assert post(client, {**signed_for(PUBLIC), **with_port})[1]["status"] == "duplicate"
    wrong_port = "https://calls.example.com:9443/webhooks/twilio"
    assert post(client, {**signed_for(wrong_port), **with_port})[0] == 401


def test_public_base_url_is_used_whatever_the_app_sees(tmp_path: Path) -> None:
    app = make_app(
        tmp_path,
        CALLREC_TWILIO_AUTH_TOKEN=TOKEN,
        CALLREC_PUBLIC_BASE_URL="https://calls.example.com",
    )
    client = app.test_client()
    assert post(client, signed_for(PUBLIC), base_url="http://10.0.0.5:8000")[0] == 200
    query = f"{PUBLIC}?tenant=a"
    extra = COMPLETED.replace(b"=completed", b"=absent")
    status, _ = post(client, signed_for(query, extra), extra, query_string="tenant=a")  # type: ignore[arg-type]
    assert status == 200


def test_statuses_and_what_lands_in_the_ledger(tmp_path: Path) -> None:
    app = make_app(tmp_path, CALLREC_TWILIO_AUTH_TOKEN=TOKEN)
    client = app.test_client()
    assert post(client, signed_for(SEEN))[1]["status"] == "accepted"
    assert post(client, signed_for(SEEN))[1]["status"] == "duplicate"
    progress = (PAYLOADS / "twilio" / "recording.in-progress.form").read_bytes()
    assert post(client, signed_for(SEEN, progress), progress)[1]["status"] == "ignored"
    (row,) = rows(app)
    assert (row.provider, row.recording_key, row.state) == (
        "twilio",
        "RE1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d",
        "accepted",
    )
    assert row.call_id == "CA9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"


def test_absent_callback_creates_a_row_to_fail(tmp_path: Path) -> None:
    app = make_app(tmp_path, CALLREC_TWILIO_AUTH_TOKEN=TOKEN)
    absent = (PAYLOADS / "twilio" / "recording.absent.form").read_bytes()
    assert post(app.test_client(), signed_for(SEEN, absent), absent)[1]["status"] == "accepted"
    (row,) = rows(app)
    assert row.hints["status"] == "absent" and row.hints["error_code"] == "16101"


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", "multipart/form-data"])
def test_valid_signature_with_a_content_type_twilio_never_sends_is_415(
    client: FlaskClient, content_type: str
) -> None:
    headers = {**signed_for(SEEN), "Content-Type": content_type}
    assert post(client, headers)[0] == 415


@pytest.mark.parametrize(
    "body", [COMPLETED + b"&stray", b"RecordingStatus=completed", COMPLETED + b"&x=%ff"]
)
def test_malformed_form_with_a_valid_signature_is_400(client: FlaskClient, body: bytes) -> None:
    status, answer = post(client, signed_for(SEEN, body), body)
    assert status == 400 and answer["error"]


def test_unsigned_and_missing_token_fail_closed(tmp_path: Path, client: FlaskClient) -> None:
    assert post(client, {"Content-Type": FORM})[0] == 401
    unconfigured = make_app(tmp_path / "no-token").test_client()
    assert post(unconfigured, signed_for(SEEN))[0] == 503


def test_oversized_body_is_413(client: FlaskClient) -> None:
    body = COMPLETED + b"&Pad=" + b"x" * 300_000
    assert post(client, signed_for(SEEN, body), body)[0] == 413


def test_texml_form_callback_is_a_telnyx_recording(tmp_path: Path) -> None:
    signer = TelnyxWebhookSigner(SigningKey(b"\x05" * 32))
    app = make_app(tmp_path, CALLREC_TELNYX_PUBLIC_KEY=signer.public_key_b64)
    body = (PAYLOADS / "telnyx" / "texml.recording.completed.form").read_bytes()
    client = app.test_client()
    response = client.post(
        "/webhooks/telnyx", data=body, headers={**signer.headers(body), "content-type": FORM}
    )
    assert response.get_json() == {"status": "accepted", "recordings": [1]}
    again = client.post(
        "/webhooks/telnyx", data=body, headers={**signer.headers(body), "content-type": FORM}
    )
    assert again.get_json()["status"] == "duplicate"
    (row,) = rows(app)
    assert (row.provider, row.recording_key) == ("telnyx", "10cd86ac-5a0e-4a1e-9d38-0a7b1b7c8f21")
    assert row.hints["connection_id"] == "1494404757140276705"
    assert "http" not in str(row.hints)
    twilio_signed = client.post("/webhooks/telnyx", data=body, headers=signed_for(SEEN, body))
    assert twilio_signed.status_code == 401  # TeXML is Ed25519-signed, never X-Twilio-Signature
