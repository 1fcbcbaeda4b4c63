"""The Quo emulator over real HTTP on loopback: the recordings endpoint per seed 002, the rate
limit, expiring audio, and the webhook sender checked against the standardwebhooks library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import httpx
import pytest
from standardwebhooks import Webhook

from emulators.quo import STATUSES, QuoEmulator, QuoWebhookSender


@pytest.fixture
def emulator() -> Iterator[QuoEmulator]:
    with QuoEmulator(rate_limit=None) as running:
        yield running


@pytest.fixture
def api(emulator: QuoEmulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": emulator.api_key}
    with httpx.Client(base_url=emulator.base_url, headers=headers, trust_env=False) as client:
        yield client


@pytest.mark.parametrize("authorization", [None, "Bearer test-quo-key", "wrong"])
def test_api_key_is_sent_bare_else_401(emulator: QuoEmulator, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{emulator.base_url}/v1/call-recordings/AC1", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert (body["code"], body["title"], body["status"]) == ("0900401", "Unauthorized", 401)
    assert body["docs"] and body["trace"]


def test_segments_oldest_first_in_the_openapi_shape(
    emulator: QuoEmulator, api: httpx.Client
) -> None:
    call = emulator.add_call(segments=3, duration=30)
    items = api.get(f"/v1/call-recordings/{call.id}").json()["data"]
    assert [i["id"] for i in items] == [r.id for r in call.recordings]
    assert [i["startTime"] for i in items] == sorted(i["startTime"] for i in items)
    for item in items:
        assert set(item) == {"duration", "id", "startTime", "status", "type", "url"}
        assert (item["status"], item["type"], item["duration"]) == ("completed", "audio/mpeg", 30)


@pytest.mark.parametrize("status", sorted(STATUSES - {"completed"}))
def test_url_and_duration_are_null_until_completed(
    emulator: QuoEmulator, api: httpx.Client, status: str
) -> None:
    call = emulator.add_call(status=status)
    (item,) = api.get(f"/v1/call-recordings/{call.id}").json()["data"]
    assert (item["status"], item["url"], item["duration"]) == (status, None, None)
    emulator.set_status(call.recordings[0].id, "completed")
    (item,) = api.get(f"/v1/call-recordings/{call.id}").json()["data"]
    assert item["url"] and item["duration"] == 60


def test_bad_and_unknown_call_ids(api: httpx.Client) -> None:
    bad = api.get("/v1/call-recordings/CR123")
    assert bad.status_code == 400 and bad.json()["errors"][0]["path"] == "/callId"
    missing = api.get("/v1/call-recordings/ACnope")
    assert missing.status_code == 404 and missing.json()["message"] == "Call not found"


def test_audio_is_exact_ranged_and_expires() -> None:
    with QuoEmulator(url_ttl_seconds=0.5, rate_limit=None) as short:
        rec = short.add_call(size=5000).recordings[0]
        headers = {"Authorization": short.api_key}
        url = httpx.get(f"{short.base_url}/v1/call-recordings/{rec.call_id}", headers=headers)
        audio_url = url.json()["data"][0]["url"]
        body = httpx.get(audio_url).content
        assert hashlib.sha256(body).hexdigest() == rec.audio().sha256()
        assert body.startswith(b"ID3")
        ranged = httpx.get(audio_url, headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == body[10:20]
        time.sleep(0.6)
        expired = httpx.get(audio_url)
        assert expired.status_code == 403 and b"Request has expired" in expired.content


def test_rate_limit_is_10_per_second_per_key_with_retry_after() -> None:
    with QuoEmulator() as limited:
        call = limited.add_call()
        url = f"{limited.base_url}/v1/call-recordings/{call.id}"
        with httpx.Client(headers={"Authorization": limited.api_key}) as client:
            statuses = [client.get(url).status_code for _ in range(11)]
            assert statuses == [200] * 10 + [429]
            limited_response = client.get(url)
            assert limited_response.headers["Retry-After"] == "1"
            assert limited_response.json()["status"] == 429
            time.sleep(1.05)
            assert client.get(url).status_code == 200


def test_injected_faults_fire_then_clear(emulator: QuoEmulator, api: httpx.Client) -> None:
    call = emulator.add_call()
    emulator.inject("api", "503")
    emulator.inject("api", "429", retry_after=7)
    first = api.get(f"/v1/call-recordings/{call.id}")
    second = api.get(f"/v1/call-recordings/{call.id}")
    assert (first.status_code, second.status_code) == (503, 429)
    assert second.headers["Retry-After"] == "7"
    assert api.get(f"/v1/call-recordings/{call.id}").status_code == 200
    assert [r.status for r in emulator.requests] == [503, 429, 200]


def test_sender_legacy_header_is_quos_hmac() -> None:
    sender = QuoWebhookSender()
    body = sender.call_event_body()
    header = sender.legacy_headers(body, 1639710054089)["openphone-signature"]
    scheme, version, ts, sig = header.split(";")
    assert (scheme, version, ts) == ("hmac", "1", "1639710054089")
    key = base64.b64decode(sender.signing_key_b64)
    expected = hmac.new(key, ts.encode() + b"." + body, hashlib.sha256).digest()
    assert base64.b64decode(sig) == expected
    seconds = sender.legacy_headers(body, unit="s")["openphone-signature"].split(";")[2]
    assert len(seconds) == 10


def test_sender_standard_headers_verify_with_the_library() -> None:
    sender = QuoWebhookSender()
    body = sender.call_event_body(shape="resource", event_type="call.completed")
    headers = sender.standard_headers(body)
    parsed = Webhook(sender.webhook_secret).verify(body, headers)
    assert parsed["data"]["resource"]["id"].startswith("AC")
    assert parsed["apiVersion"] == "2026-03-30"
