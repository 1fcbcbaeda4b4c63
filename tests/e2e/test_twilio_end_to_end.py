"""Twilio recordings from signed callback to S3, for real: PostgreSQL ledger, RabbitMQ broker,
moto-server S3, a real Celery worker and relay process, and the web app behind a simulated TLS
terminating proxy. Twilio signs ``https://calls.example.com/webhooks/twilio``; the app listens on
``http://127.0.0.1:<port>`` and rebuilds the public URL from the proxy's ``X-Forwarded-*``
(``CALLREC_TRUST_PROXY_HOPS=1``). Nothing is patched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from werkzeug.wrappers import Request, Response

from emulators.server import LoopbackServer
from emulators.twilio import (
    EmulatedRecording,
    TwilioCallbackSigner,
    TwilioEmulator,
    callback_params,
)
from storage import recording_key
from tests.e2e.stack import Stack, server_env, start_stack
from tests.fixtures.servers import fresh_postgres_database

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.s3,
    pytest.mark.timeout(300),
]

PUBLIC_HOST = "calls.example.com"
PUBLIC_URL = f"https://{PUBLIC_HOST}/webhooks/twilio"


class TlsTerminatingProxy:
    """What a load balancer does: takes the public request and forwards it over plain http to
    the app, saying where it came from in ``X-Forwarded-Proto/Host/Port/For``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.http = httpx.Client(timeout=20)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        headers = {
            "Content-Type": request.headers.get("Content-Type", ""),
            "X-Twilio-Signature": request.headers.get("X-Twilio-Signature", ""),
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": request.host.split(":")[0],
            "X-Forwarded-Port": "443",
            "X-Forwarded-For": request.remote_addr or "",
        }
        upstream = self.http.post(
            f"{self.upstream}{request.full_path.rstrip('?')}",
            content=request.get_data(),
            headers=headers,
        )
        response = Response(upstream.content, upstream.status_code, content_type="application/json")
        return response(environ, start_response)


class TwilioStack:
    def __init__(self, stack: Stack, emulator: TwilioEmulator, proxy_url: str) -> None:
        self.stack, self.emulator, self.proxy_url = stack, emulator, proxy_url
        self.signer = TwilioCallbackSigner(emulator.auth_token)

    def callback(self, rec: EmulatedRecording, **kwargs: object) -> httpx.Response:
        """POST the signed callback as Twilio would, to the public host (via the proxy)."""
        media = "https://api.twilio.com"
        body, headers = self.signer.sign(PUBLIC_URL, callback_params(rec, media, **kwargs))  # type: ignore[arg-type]
        return httpx.post(
            f"{self.proxy_url}{urlsplit(PUBLIC_URL).path}",
            content=body,
            headers={**headers, "Host": PUBLIC_HOST},
            timeout=20,
        )

    def objects_of(self, rec: EmulatedRecording) -> list[str]:
        """Every stored object of ``rec``: the keys that start with its audio key's stem.

        Not its whole fan-out folder: other recordings of the module share it one time in 256.
        """
        key = recording_key("twilio", "default", rec.sid, "wav")
        bucket, _, prefix = self.stack.env["CALLREC_STORAGE_URL"][5:].partition("/")
        s3 = boto3.client(
            "s3", endpoint_url=self.stack.env["CALLREC_S3_ENDPOINT_URL"], region_name="us-east-1"
        )
        stem = f"{prefix}/{key.rsplit('.', 1)[0]}."
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=stem).get("Contents", [])
        return sorted(item["Key"][len(prefix) + 1 :] for item in listed)


@pytest.fixture(scope="module")
def twilio(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwilioStack]:
    tmp: Path = tmp_path_factory.mktemp("twilio-e2e")
    for database in fresh_postgres_database():
        with TwilioEmulator() as emulator:
            stack = start_stack(
                tmp,
                **server_env("postgres-rabbitmq-s3", request, database),
                **emulator.settings_env(),
                CALLREC_TRUST_PROXY_HOPS="1",
            )
            proxy = TlsTerminatingProxy(stack.web_url)
            server = LoopbackServer(proxy).start()
            try:
                yield TwilioStack(stack, emulator, server.url)
            finally:
                server.stop()
                proxy.http.close()
                stack.close()


def test_callback_through_the_proxy_ends_as_audio_and_record(twilio: TwilioStack) -> None:
    rec = twilio.emulator.add_recording(size=300_000, channels=2, duration=42)
    response = twilio.callback(rec)
    assert response.status_code == 200, response.text
    row = twilio.stack.wait_final(rec.sid)
    key = recording_key("twilio", "default", rec.sid, "wav")
    assert row.state == "stored", row.last_error
    assert (row.storage_key, row.size_bytes) == (key, 300_000)
    assert row.sha256 == rec.audio("wav").sha256() == twilio.stack.stored_bytes_sha256(key)
    record = twilio.stack.metadata(key)
    assert (record["provider"], record["recording_id"], record["call_id"]) == (
        "twilio",
        rec.sid,
        rec.call_sid,
    )
    assert (record["format"], record["duration_seconds"], record["channels"]) == ("wav", 42, 2)
    assert record["source_host"] == "127.0.0.1" and record["started_at"] and record["ended_at"]
    assert twilio.emulator.auth_token not in str(record)
    assert all(r.authorized for r in twilio.emulator.requests if rec.sid in r.path)


def test_signature_for_the_internal_url_is_refused(twilio: TwilioStack) -> None:
    """The app checks the public URL it rebuilt, not the one it listens on."""
    rec = twilio.emulator.add_recording()
    body, headers = twilio.signer.sign(
        f"{twilio.stack.web_url}/webhooks/twilio", callback_params(rec)
    )
    sent = httpx.post(
        f"{twilio.proxy_url}/webhooks/twilio",
        content=body,
        headers={**headers, "Host": PUBLIC_HOST},
        timeout=20,
    )
    assert sent.status_code == 401


def test_duplicate_callbacks_store_one_object(twilio: TwilioStack) -> None:
    rec = twilio.emulator.add_recording(size=100_000)
    with ThreadPoolExecutor(6) as pool:  # six deliveries at once
        statuses = list(pool.map(lambda _: twilio.callback(rec).status_code, range(6)))
    statuses += [twilio.callback(rec).status_code for _ in range(2)]
    assert statuses == [200] * 8
    row = twilio.stack.wait_final(rec.sid)
    assert row.state == "stored"
    assert [r.recording_key for r in twilio.stack.rows()].count(rec.sid) == 1
    key = recording_key("twilio", "default", rec.sid, "wav")
    assert twilio.objects_of(rec) == [key.replace(".wav", ".json"), key]


def test_absent_callback_ends_failed_with_its_error_code(twilio: TwilioStack) -> None:
    rec = twilio.emulator.add_recording(status="absent", error_code=16101)
    assert twilio.callback(rec, status="absent", error_code=16101).status_code == 200
    row = twilio.stack.wait_final(rec.sid)
    assert row.state == "failed"
    assert row.last_error is not None and "absent (ErrorCode 16101)" in row.last_error
    assert twilio.objects_of(rec) == []


def test_rate_limited_api_is_waited_out(twilio: TwilioStack) -> None:
    rec = twilio.emulator.add_recording(size=20_000)
    twilio.emulator.inject("api", "429", retry_after=1)
    assert twilio.callback(rec).status_code == 200
    row = twilio.stack.wait_final(rec.sid)
    assert row.state == "stored" and row.attempts == 2
