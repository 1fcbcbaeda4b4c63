"""The webhook view: statuses for every kind of input, and what lands in the ledger."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient
from nacl.signing import SigningKey
from sqlalchemy import func, select

from emulators.telnyx import TelnyxWebhookSigner
from ingest.app import create_app
from ledger import Delivery, Recording, migrate
from tests.fixtures.callrec import base_env, settings_from

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "telnyx"
SIGNER = TelnyxWebhookSigner(SigningKey(b"\x03" * 32))
BODY = (PAYLOADS / "call.recording.saved.tutorial.json").read_bytes()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    env = base_env(
        tmp_path, CALLREC_TELNYX_PUBLIC_KEY=SIGNER.public_key_b64, CALLREC_MAX_BODY_BYTES="4096"
    )
    settings = settings_from(env)
    migrate(settings.database_url)
    yield create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def count(app: Flask, model: type) -> int:
    with app.extensions["callrec"].sessions() as session:
        return int(session.execute(select(func.count()).select_from(model)).scalar_one())


def post(
    client: FlaskClient,
    body: bytes,
    headers: dict[str, str] | None = None,
    path: str = "/webhooks/telnyx",
) -> tuple[int, dict[str, object]]:
    response = client.post(
        path, data=body, headers=SIGNER.headers(body) if headers is None else headers
    )
    return response.status_code, response.get_json()


def test_signed_webhook_is_accepted_into_the_ledger(app: Flask, client: FlaskClient) -> None:
    status, body = post(client, BODY)
    assert (status, body["status"]) == (200, "accepted")
    with app.extensions["callrec"].sessions() as session:
        row = session.execute(select(Recording)).scalar_one()
    assert row.recording_key == "10cd86ac-5a0e-4a1e-9d38-0a7b1b7c8f21"
    assert (row.provider, row.account, row.state) == ("telnyx", "default", "accepted")


def test_redelivery_is_a_duplicate(app: Flask, client: FlaskClient) -> None:
    assert post(client, BODY)[1]["status"] == "accepted"
    again = BODY.replace(b'"attempt":1', b'"attempt":2')
    status, body = post(client, again)
    assert (status, body["status"]) == (200, "duplicate")
    assert count(app, Recording) == 1 and count(app, Delivery) == 1


def test_new_delivery_of_a_known_recording_finds_the_same_row(
    app: Flask, client: FlaskClient
) -> None:
    first = post(client, BODY)[1]
    other = BODY.replace(b"bf6f3f8a-2d46", b"00000000-2d46")
    second = post(client, other)[1]
    assert second["status"] == "accepted"
    assert second["recordings"] == first["recordings"]
    assert count(app, Recording) == 1 and count(app, Delivery) == 2


def test_ignored_event_type_is_acknowledged(app: Flask, client: FlaskClient) -> None:
    body = (PAYLOADS / "call.hangup.json").read_bytes()
    assert post(client, body) == (200, {"status": "ignored", "recordings": []})
    assert count(app, Recording) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"telnyx-timestamp": str(int(time.time()))},
        {"content-type": "application/json"},
    ],
)
def test_missing_signature_is_401(client: FlaskClient, headers: dict[str, str]) -> None:
    status, body = post(client, BODY, headers)
    assert status == 401 and body == {"error": "signature verification failed"}


def test_stale_timestamp_is_401_and_nothing_recorded(app: Flask, client: FlaskClient) -> None:
    status, _ = post(client, BODY, SIGNER.headers(BODY, int(time.time()) - 301))
    assert status == 401 and count(app, Recording) == 0 and count(app, Delivery) == 0


def test_body_over_the_limit_is_413(client: FlaskClient) -> None:
    big = b'{"pad":"' + b"x" * 5000 + b'"}'
    status, body = post(client, big)
    assert status == 413 and "error" in body


@pytest.mark.parametrize("size", [4096, 4097, 10_000])
def test_chunked_body_over_the_limit_is_413_not_cut_at_the_limit(
    client: FlaskClient, size: int
) -> None:
    """A body without Content-Length used to be cut at the limit and judged as such (a 401)."""
    body = b" " * (size - len(BODY)) + BODY
    response = client.post(
        "/webhooks/telnyx",
        input_stream=io.BytesIO(body),
        headers={**SIGNER.headers(body), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as a server that de-chunks sets
    )
    assert response.status_code == (200 if size <= 4096 else 413)


def test_valid_signature_with_foreign_content_type_is_415(client: FlaskClient) -> None:
    headers = {**SIGNER.headers(BODY), "content-type": "text/plain"}
    assert post(client, BODY, headers)[0] == 415


@pytest.mark.parametrize("bad", [b"{", b"\xff", b"[" * 3000, b'{"data":{"id":"x"}}'])
def test_malformed_body_with_valid_signature_is_400(client: FlaskClient, bad: bytes) -> None:
    status, body = post(client, bad)
    assert status == 400 and isinstance(body["error"], str) and len(body["error"]) < 200


def test_unknown_provider_or_account_is_refused_as_a_bad_signature(client: FlaskClient) -> None:
    refused = (401, {"error": "signature verification failed"})
    assert post(client, BODY, path="/webhooks/nope") == refused
    assert post(client, BODY, path="/webhooks/telnyx/nope") == refused


def test_get_is_405_json(client: FlaskClient) -> None:
    response = client.get("/webhooks/telnyx")
    assert response.status_code == 405 and "error" in response.get_json()


def test_unconfigured_public_key_is_503_not_an_accept(tmp_path: Path) -> None:
    settings = settings_from(base_env(tmp_path))
    migrate(settings.database_url)
    app = create_app(settings)
    response = app.test_client().post("/webhooks/telnyx", data=BODY, headers=SIGNER.headers(BODY))
    assert response.status_code == 503
    assert count(app, Recording) == 0


def test_ledger_unreachable_is_503(tmp_path: Path) -> None:
    env = base_env(tmp_path, CALLREC_TELNYX_PUBLIC_KEY=SIGNER.public_key_b64)
    settings = settings_from(env)  # never migrated: every insert fails
    app = create_app(settings)
    response = app.test_client().post("/webhooks/telnyx", data=BODY, headers=SIGNER.headers(BODY))
    assert response.status_code == 503


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["checks"] == {"ledger": "ok", "broker": "ok", "storage": "ok"}


def test_readiness_reports_an_unreachable_broker(tmp_path: Path) -> None:
    env = base_env(tmp_path, CALLREC_BROKER_URL="redis://127.0.0.1:9/0")
    settings = settings_from(env)
    migrate(settings.database_url)
    response = create_app(settings).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["broker"].startswith("unreachable")


def test_concurrent_identical_deliveries_make_one_row(app: Flask, web_server_app: str) -> None:
    """The same signed bytes, 20 times at once over real HTTP: all 2xx, one row."""
    headers = SIGNER.headers(BODY)
    results: list[int] = []

    def send() -> None:
        results.append(
            httpx.post(
                web_server_app + "/webhooks/telnyx", content=BODY, headers=headers, timeout=20
            ).status_code
        )

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [200] * 20
    assert count(app, Recording) == 1 and count(app, Delivery) == 1


@pytest.fixture
def web_server_app(app: Flask) -> Iterator[str]:
    from emulators.server import LoopbackServer

    server = LoopbackServer(app)
    server.start()
    yield server.url
    server.stop()
