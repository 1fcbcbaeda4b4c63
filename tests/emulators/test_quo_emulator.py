"""The Quo emulator over real HTTP on loopback: the recordings endpoint per seed 002, the rate
limit, expiring audio, and the webhook sender checked against the standardwebhooks library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

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


# -- conversations and calls ------------------------------------------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)
A, B, C = "+18005550100", "+18005550111", "+18005550122"
ONE = {"phoneNumberId": "PN1", "participants": A}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def walk(api: httpx.Client, path: str, params: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Every page of a list, following ``nextPageToken`` (at most 20 pages)."""
    pages, token = [], None
    for _ in range(20):
        response = api.get(path, params={**params, **({"pageToken": token} if token else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["data"])
        token = body["nextPageToken"]
        if token is None:
            return pages
    raise AssertionError("more than 20 pages")


@pytest.mark.parametrize(
    ("params", "path", "message"),
    [
        ({"participants": "+18005550100"}, "/phoneNumberId", "Expected required property"),
        ({"phoneNumberId": "PN1"}, "/participants", "Expected required property"),
        (
            {"phoneNumberId": "PN1", "participants": ["+18005550100", "+18005550111"]},
            "/participants",
            "exactly 1 item",
        ),
        ({"phoneNumberId": "PN1", "participants": "5550100"}, "/participants/0", "E.164"),
        ({**ONE, "maxResults": 101}, "/maxResults", "between 1 and 100"),
        ({**ONE, "createdAfter": "today"}, "/createdAfter", "date-time"),
    ],
)  # fmt: skip
def test_calls_require_a_line_and_one_e164_participant(
    api: httpx.Client, params: dict[str, Any], path: str, message: str
) -> None:
    response = api.get("/v1/calls", params=params)
    assert response.status_code == 400
    body = response.json()
    assert (body["title"], body["message"]) == ("Bad Request", "Invalid request")
    assert path in [e["path"] for e in body["errors"]]
    assert any(message in e["message"] for e in body["errors"])
    assert "trace" not in body


def test_calls_newest_first_paged_and_filtered_by_creation(
    emulator: QuoEmulator, api: httpx.Client
) -> None:
    calls = [emulator.add_call(created_at=NOW - timedelta(minutes=m)) for m in (50, 40, 30, 20, 10)]
    emulator.add_call(created_at=NOW - timedelta(minutes=35), participant="+18005550111")
    emulator.add_call(created_at=NOW - timedelta(minutes=35), phone_number_id="PNother")
    live = emulator.add_call(created_at=NOW - timedelta(minutes=5), call_status="ringing")
    line = {"phoneNumberId": "PNtoDbDhuz", "participants": "+18005550100", "maxResults": 2}
    pages = walk(api, "/v1/calls", line)
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [c["id"] for p in pages for c in p] == [live.id] + [c.id for c in reversed(calls)]
    first = pages[0][0]
    assert (first["status"], first["completedAt"], first["duration"]) == ("ringing", None, 0)
    assert first["participants"] == ["+18005550100"] and first["phoneNumberId"] == "PNtoDbDhuz"
    window = {"createdAfter": iso(calls[1].created_at), "createdBefore": iso(calls[4].created_at)}
    (inside,) = walk(api, "/v1/calls", {**line, **window, "maxResults": 100})
    assert [c["id"] for c in inside] == [calls[3].id, calls[2].id]  # both bounds exclusive
    other = api.get("/v1/calls", params={**line, "participants": "+18005550111", **window})
    assert other.json()["totalItems"] == 1
    token = api.get("/v1/calls", params=line).json()["nextPageToken"]
    reused = api.get("/v1/calls", params={**line, **window, "pageToken": token})
    assert reused.status_code == 400 and reused.json()["errors"][0]["path"] == "/pageToken"


def test_conversations_derive_from_calls_latest_activity_first(
    emulator: QuoEmulator, api: httpx.Client
) -> None:
    old = emulator.add_call(created_at=NOW - timedelta(hours=3), participant="+18005550111")
    emulator.add_call(created_at=NOW - timedelta(minutes=40))
    recent = emulator.add_call(created_at=NOW - timedelta(minutes=20))
    live = emulator.add_call(
        created_at=NOW - timedelta(minutes=30),
        call_status="in-progress",
        participant="+18005550122",
    )
    emulator.add_activity("PNtoDbDhuz", "+18005550111", NOW + timedelta(minutes=5))  # a message
    (page,) = walk(api, "/v1/conversations", {"maxResults": 10})
    assert [c["participants"] for c in page] == [
        ["+18005550111"],
        ["+18005550100"],
        ["+18005550122"],
    ]
    by_number = {c["participants"][0]: c for c in page}
    assert by_number["+18005550111"]["updatedAt"] == iso(NOW + timedelta(minutes=5))[:-1] + ".000Z"
    assert by_number["+18005550111"]["createdAt"].startswith(iso(old.created_at)[:-1])
    assert by_number["+18005550100"]["lastActivityId"] == recent.id
    assert by_number["+18005550122"]["lastActivityAt"].startswith(iso(live.created_at)[:-1])
    assert all(c["id"].startswith("CN") and c["phoneNumberId"] == "PNtoDbDhuz" for c in page)
    after = {"updatedAfter": iso(NOW - timedelta(minutes=25)), "maxResults": 1}
    pages = walk(api, "/v1/conversations", after)
    assert [[c["participants"][0] for c in p] for p in pages] == [
        ["+18005550111"],
        ["+18005550100"],
    ]
    before = {"updatedBefore": iso(NOW), "phoneNumbers[]": "PNtoDbDhuz", "userId": "USu5AsEHuQ"}
    (kept,) = walk(api, "/v1/conversations", before)
    assert [c["participants"][0] for c in kept] == ["+18005550100", "+18005550122"]
    assert walk(api, "/v1/conversations", {"phoneNumbers[]": "PNnone"}) == [[]]
    bad = api.get("/v1/conversations", params={"maxResults": 0, "updatedAfter": "soon"})
    assert {e["path"] for e in bad.json()["errors"]} == {"/maxResults", "/updatedAfter"}
