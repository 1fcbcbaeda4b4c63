"""Quo webhooks under both signature schemes, payload shapes, and the recordings API (emulator)."""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulators.quo import QuoEmulator, QuoWebhookSender, call_event_body
from providers.base import Account, Provider, WebhookRequest
from providers.errors import (
    ConfigurationMissing,
    NothingToCapture,
    NotReadyYet,
    PayloadInvalid,
    PermanentFailure,
    RateLimited,
    RetryLater,
    SignatureInvalid,
)
from providers.http import new_http_client
from providers.quo import QuoProvider
from providers.ratelimit import Pacer
from tests.providers.contract import ProviderWebhookContract, webhook_request

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "quo"
LEGACY_BODY = (PAYLOADS / "call.recording.completed.legacy.json").read_bytes()
RESOURCE_BODY = (PAYLOADS / "call.completed.resource.json").read_bytes()
IGNORED_BODY = (PAYLOADS / "message.received.legacy.json").read_bytes()
SENDER = QuoWebhookSender(signing_key=b"\x01" * 32, webhook_secret=b"\x02" * 24)
OTHER = QuoWebhookSender(signing_key=b"\x03" * 32, webhook_secret=b"\x04" * 24)
SOURCES = {
    "api_key": "CALLREC_QUO_API_KEY",
    "signing_key": "CALLREC_QUO_SIGNING_KEY",
    "webhook_secret": "CALLREC_QUO_WEBHOOK_SECRET",
}


def account(
    signing_key: str | None = SENDER.signing_key_b64,
    webhook_secret: str | None = SENDER.webhook_secret,
    api_key: str = "test-quo-key",
    api_base: str = "http://127.0.0.1:9",
) -> Account:
    return Account(
        provider="quo",
        name="default",
        api_base=api_base,
        audio_hosts=("127.0.0.1",),
        credentials={
            "api_key": api_key,
            "signing_key": signing_key,
            "webhook_secret": webhook_secret,
        },
        sources=SOURCES,
    )


def provider(**kwargs: Any) -> QuoProvider:
    return QuoProvider(account(**kwargs), new_http_client(5))


def request(body: bytes, headers: dict[str, str], now: float | None = None) -> WebhookRequest:
    return webhook_request(body, headers, "/webhooks/quo", now)


class TestQuoLegacyWebhookContract(ProviderWebhookContract):
    def make_provider(self) -> Provider:
        return provider()

    def signed(self, body: bytes, *, now: float | None = None) -> WebhookRequest:
        return request(body, SENDER.legacy_headers(body), now)

    def capture_body(self) -> bytes:
        return LEGACY_BODY

    def ignored_body(self) -> bytes:
        return IGNORED_BODY


class TestQuoStandardWebhookContract(TestQuoLegacyWebhookContract):
    def signed(self, body: bytes, *, now: float | None = None) -> WebhookRequest:
        return request(body, SENDER.standard_headers(body), now)

    def capture_body(self) -> bytes:
        return RESOURCE_BODY


# -- legacy signatures ------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["ms", "s"])
@pytest.mark.parametrize("skew", [-299, 0, 299])
def test_legacy_timestamps_in_ms_or_s_within_5_minutes_verify(unit: str, skew: int) -> None:
    now = time.time()
    ts = int((now + skew) * 1000) if unit == "ms" else int(now + skew)
    provider().verify(request(LEGACY_BODY, SENDER.legacy_headers(LEGACY_BODY, ts), now))


@pytest.mark.parametrize("unit", ["ms", "s"])
@pytest.mark.parametrize("skew", [-302, 302, -7 * 86400])
def test_legacy_stale_and_future_timestamps_are_rejected(unit: str, skew: int) -> None:
    now = time.time()
    ts = int((now + skew) * 1000) if unit == "ms" else int(now + skew)
    with pytest.raises(SignatureInvalid):
        provider().verify(request(LEGACY_BODY, SENDER.legacy_headers(LEGACY_BODY, ts), now))


def test_legacy_signature_matches_quos_python_sample() -> None:
    """Quo's sample: b64(HMAC-SHA256(b64decode(key), ts + "." + body)) — recomputed by hand."""
    import hmac

    ts = "1639710054089"
    digest = hmac.new(
        base64.b64decode(SENDER.signing_key_b64), ts.encode() + b"." + LEGACY_BODY, "sha256"
    ).digest()
    header = SENDER.legacy_headers(LEGACY_BODY, int(ts))["openphone-signature"]
    assert header == f"hmac;1;{ts};{base64.b64encode(digest).decode()}"
    provider().verify(request(LEGACY_BODY, {"openphone-signature": header}, 1639710054.089))


def test_legacy_signature_from_another_key_is_rejected() -> None:
    with pytest.raises(SignatureInvalid):
        provider().verify(request(LEGACY_BODY, OTHER.legacy_headers(LEGACY_BODY)))


def test_legacy_timestamp_is_part_of_the_signed_message() -> None:
    ts = int(time.time() * 1000)
    header = SENDER.legacy_headers(LEGACY_BODY, ts)["openphone-signature"]
    forged = header.replace(f";{ts};", f";{ts - 1};")
    with pytest.raises(SignatureInvalid):
        provider().verify(request(LEGACY_BODY, {"openphone-signature": forged}))


@pytest.mark.parametrize(
    "mangle",
    [
        lambda h: h.replace("hmac;1;", "hmac;2;"),
        lambda h: h.replace("hmac;1;", "sha1;1;"),
        lambda h: h.rpartition(";")[0],
        lambda h: h + ";extra",
        lambda h: h.rpartition(";")[0] + ";not base64!",
        lambda h: h.rpartition(";")[0] + ";" + base64.b64encode(b"x" * 31).decode(),
        lambda h: h.replace(h.split(";")[2], h.split(";")[2][:11]),  # 11 digits: neither unit
        lambda h: "",
    ],
    ids=["version", "scheme", "3-fields", "5-fields", "bad-b64", "short-sig", "11-digits", "empty"],
)
def test_malformed_legacy_headers_are_rejected(mangle: Any) -> None:
    header = SENDER.legacy_headers(LEGACY_BODY)["openphone-signature"]
    with pytest.raises(SignatureInvalid):
        provider().verify(request(LEGACY_BODY, {"openphone-signature": mangle(header)}))


@pytest.mark.parametrize("key", [None, "", "%%%not-base64"])
def test_missing_or_bad_signing_key_fails_closed_naming_the_setting(key: str | None) -> None:
    with pytest.raises(ConfigurationMissing, match="CALLREC_QUO_SIGNING_KEY"):
        provider(signing_key=key).verify(request(LEGACY_BODY, SENDER.legacy_headers(LEGACY_BODY)))


def test_no_key_configured_at_all_is_a_configuration_error_even_without_headers() -> None:
    with pytest.raises(ConfigurationMissing, match="CALLREC_QUO_SIGNING_KEY nor"):
        provider(signing_key=None, webhook_secret=None).verify(request(LEGACY_BODY, {}))


# -- Standard Webhooks ------------------------------------------------------------------------


def test_standard_webhooks_spec_vector() -> None:
    """The library's own vector (providers.md §6.2) comes out of our sender."""
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    sender = QuoWebhookSender(webhook_secret=key)
    assert sender.webhook_secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    headers = sender.standard_headers(
        body, msg_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330
    )
    assert headers["webhook-signature"] == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    with pytest.raises(SignatureInvalid):  # 2021: far outside the tolerance
        provider(webhook_secret=sender.webhook_secret).verify(request(body, headers))


@pytest.mark.parametrize("skew", [-290, 290])
def test_standard_timestamps_within_5_minutes_verify(skew: int) -> None:
    headers = SENDER.standard_headers(RESOURCE_BODY, timestamp=int(time.time()) + skew)
    provider().verify(request(RESOURCE_BODY, headers))


@pytest.mark.parametrize("skew", [-310, 310, -86400])
def test_standard_stale_and_future_timestamps_are_rejected(skew: int) -> None:
    headers = SENDER.standard_headers(RESOURCE_BODY, timestamp=int(time.time()) + skew)
    with pytest.raises(SignatureInvalid):
        provider().verify(request(RESOURCE_BODY, headers))


def test_any_of_several_v1_signatures_passes() -> None:
    headers = SENDER.standard_headers(RESOURCE_BODY, extra_secrets=[OTHER.webhook_secret])
    assert len(headers["webhook-signature"].split(" ")) == 2
    provider().verify(request(RESOURCE_BODY, headers))


def test_v1a_and_wrong_v1_signatures_alone_are_rejected() -> None:
    headers = OTHER.standard_headers(RESOURCE_BODY)
    headers["webhook-signature"] = "v1a,AAAA " + headers["webhook-signature"]
    with pytest.raises(SignatureInvalid):
        provider().verify(request(RESOURCE_BODY, headers))


@pytest.mark.parametrize("drop", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_each_standard_header_is_required(drop: str) -> None:
    headers = SENDER.standard_headers(RESOURCE_BODY)
    del headers[drop]
    with pytest.raises(SignatureInvalid):
        provider().verify(request(RESOURCE_BODY, headers))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook-signature", "garbage"),
        ("webhook-signature", "v1,a,b"),
        ("webhook-timestamp", "soon"),
        ("webhook-id", "another-id"),
    ],
)
def test_malformed_or_altered_standard_headers_are_rejected(name: str, value: str) -> None:
    headers = SENDER.standard_headers(RESOURCE_BODY)
    headers[name] = value
    with pytest.raises(SignatureInvalid):
        provider().verify(request(RESOURCE_BODY, headers))


def test_non_utf8_body_under_standard_webhooks_is_a_signature_failure_not_a_crash() -> None:
    headers = SENDER.standard_headers(RESOURCE_BODY)
    with pytest.raises(SignatureInvalid):
        provider().verify(request(b"\xff\xfe", headers))


@pytest.mark.parametrize("secret", [None, "", "whsec_", "whsec_%%%%"])
def test_missing_or_bad_webhook_secret_fails_closed_naming_the_setting(secret: str | None) -> None:
    headers = SENDER.standard_headers(RESOURCE_BODY)
    with pytest.raises(ConfigurationMissing, match="CALLREC_QUO_WEBHOOK_SECRET"):
        provider(webhook_secret=secret).verify(request(RESOURCE_BODY, headers))


# -- payloads ---------------------------------------------------------------------------------


def test_legacy_recording_completed_becomes_a_call_lookup() -> None:
    event = provider().parse(request(LEGACY_BODY, {}))
    assert (event.delivery_id, event.event_type) == (
        "EVda6e196255814311aaac1983005fa2d9",
        "call.recording.completed",
    )
    (ref,) = event.recordings
    call_id = "ACbaee66e137f0467dbed5ad4bc8d60800"
    assert ref.recording_id is None and ref.call_id == call_id
    assert ref.ledger_key == f"lookup:call_id={call_id}&event=call.recording.completed"
    assert ref.hints["completedAt"] == "2022-01-24T19:30:48.000Z"
    assert "+1800" not in json.dumps(dict(ref.hints))  # no phone numbers kept


def test_resource_shape_call_completed_and_webhook_id_as_delivery_id() -> None:
    headers = SENDER.standard_headers(RESOURCE_BODY, msg_id="msg_abc")
    event = provider().parse(request(RESOURCE_BODY, headers))
    assert (event.delivery_id, event.event_type) == ("msg_abc", "call.completed")
    (ref,) = event.recordings
    assert ref.call_id == "AC3700e624eca547eb9f749a06f"
    assert dict(ref.lookup) == {"call_id": ref.call_id, "event": "call.completed"}


@pytest.mark.parametrize("shape", ["object", "resource"])
@pytest.mark.parametrize("event_type", ["call.recording.completed", "call.completed"])
def test_both_shapes_under_both_events(shape: Any, event_type: str) -> None:
    body = call_event_body(event_type=event_type, shape=shape)
    for headers in (SENDER.legacy_headers(body), SENDER.standard_headers(body)):
        req = request(body, headers)
        provider().verify(req)
        (ref,) = provider().parse(req).recordings
        assert ref.call_id == json.loads(body)["data"][shape]["id"]


@pytest.mark.parametrize("event_type", ["call.ringing", "message.received", "contact.updated"])
def test_other_events_are_acknowledged_and_ignored(event_type: str) -> None:
    body = call_event_body(event_type=event_type)
    event = provider().parse(request(body, {}))
    assert event.event_type == event_type and event.recordings == ()


@pytest.mark.parametrize(
    "body",
    [
        b'{"type":"call.completed","data":{"object":{"id":"AC1"}}}',  # no id, no webhook-id
        b'{"id":"EV1","data":{"object":{"id":"AC1"}}}',  # no type
        b'{"id":"EV1","type":"call.completed","data":{}}',
        b'{"id":"EV1","type":"call.completed","data":{"object":[]}}',
        b'{"id":"EV1","type":"call.completed","data":{"resource":{"id":5}}}',
        b'{"id":"EV1","type":"call.completed","data":{"object":{"id":"CR123"}}}',
        b'{"id":"EV1","type":"call.completed","data":{"object":{"id":"AC../x"}}}',
        b'{"id":"EV1","type":"call.completed","data":[]}',
    ],
)
def test_unknown_shapes_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        provider().parse(request(body, {}))


# -- API errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            404,
            {"message": "Call not found", "code": "0900404", "status": 404, "title": "Not Found",
             "docs": "https://openphone.com/docs", "trace": "t-1"},
            "HTTP 404 0900404 Not Found: Call not found (trace t-1)",
        ),
        (
            400,
            {"message": "Invalid request", "code": "0900400", "title": "Bad Request",
             "errors": [{"path": "/callId", "message": "Expected string to match '^AC(.*)$'",
                         "schema": {"type": "string"}}]},
            "HTTP 400 0900400 Bad Request: Invalid request; /callId: Expected string to match"
            " '^AC(.*)$'",
        ),
        (500, {"message": "x" * 500, "code": "0901500", "title": "Unknown"},
         "HTTP 500 0901500 Unknown: " + "x" * 200),
        (502, "<html>bad gateway</html>", "HTTP 502"),
        (503, ["not", "an", "object"], "HTTP 503"),
    ],
)  # fmt: skip
def test_error_bodies_become_short_reasons(status: int, body: Any, expected: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.Response(status, content=content.encode())
    assert provider().describe_error(response) == expected


# -- the API, against the emulator ------------------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[QuoEmulator]:
    with QuoEmulator(rate_limit=None) as running:
        yield running


def api_provider(emulator: QuoEmulator, api_key: str | None = None) -> QuoProvider:
    return provider(api_base=emulator.base_url, api_key=api_key or emulator.api_key)


def test_multi_segment_call_resolves_oldest_first_with_segments(emulator: QuoEmulator) -> None:
    call = emulator.add_call(segments=3)
    refs = api_provider(emulator).resolve({"call_id": call.id, "event": "call.completed"})
    assert [r.recording_id for r in refs] == [rec.id for rec in call.recordings]
    assert [r.hints["segment"] for r in refs] == [1, 2, 3]
    assert {r.call_id for r in refs} == {call.id}


def test_fetch_gives_a_fresh_url_and_the_segment(emulator: QuoEmulator) -> None:
    call = emulator.add_call(segments=2, duration=42)
    second = call.recordings[1]
    quo = api_provider(emulator)
    download = quo.fetch_recording(second.id, {"call_id": call.id, "segment": 2})
    assert download.url.startswith(emulator.url + f"/media/{second.id}.mp3?")
    assert (download.format, download.content_type) == ("mp3", "audio/mpeg")
    meta = dict(download.metadata)
    assert (meta["call_id"], meta["segment"], meta["duration_seconds"]) == (call.id, 2, 42)
    assert meta["started_at"].endswith("Z") and meta["ended_at"].endswith("Z")
    assert "url" not in json.dumps(meta)


@pytest.mark.parametrize("status", ["in-progress", "processing", "stopping", "stopped", "paused"])
def test_unfinished_recordings_are_not_ready(emulator: QuoEmulator, status: str) -> None:
    call = emulator.add_call(status=status)
    with pytest.raises(NotReadyYet, match=status):
        api_provider(emulator).fetch_recording(call.recordings[0].id, {"call_id": call.id})


@pytest.mark.parametrize("status", ["absent", "failed", "deleted"])
def test_lost_recordings_fail_permanently_with_the_status(
    emulator: QuoEmulator, status: str
) -> None:
    call = emulator.add_call(status=status)
    with pytest.raises(PermanentFailure, match=f"'{status}'"):
        api_provider(emulator).fetch_recording(call.recordings[0].id, {"call_id": call.id})


def test_empty_call_is_final_after_call_completed_but_not_after_recording_completed(
    emulator: QuoEmulator,
) -> None:
    call = emulator.add_call(segments=0)
    quo = api_provider(emulator)
    with pytest.raises(NothingToCapture):
        quo.resolve({"call_id": call.id, "event": "call.completed"})
    assert quo.resolve({"call_id": call.id, "event": "call.recording.completed"}) == []


def test_unknown_call_and_wrong_key_fail_with_quos_reason(emulator: QuoEmulator) -> None:
    with pytest.raises(PermanentFailure, match="Call not found"):
        api_provider(emulator).resolve({"call_id": "ACmissing"})
    with pytest.raises(PermanentFailure, match=r"refused the credentials.*Unauthorized"):
        api_provider(emulator, api_key="Bearer " + emulator.api_key).resolve({"call_id": "AC1"})


def test_rate_limit_is_retry_later_with_retry_after(emulator: QuoEmulator) -> None:
    emulator.inject("api", "429", retry_after=3)
    with pytest.raises(RetryLater, match="429") as caught:
        api_provider(emulator).resolve({"call_id": "AC1"})
    assert caught.value.retry_after == 3.0


def test_recording_no_longer_listed_fails(emulator: QuoEmulator) -> None:
    call = emulator.add_call(segments=1)
    with pytest.raises(PermanentFailure, match="not listed"):
        api_provider(emulator).fetch_recording("CRgone", {"call_id": call.id})


@pytest.mark.parametrize("hints", [{}, {"call_id": 5}, {"call_id": "CR1"}])
def test_a_row_without_its_call_id_fails(hints: dict[str, Any]) -> None:
    with pytest.raises(PermanentFailure, match="call id"):
        provider().fetch_recording("CR1", hints)


def test_api_calls_are_paced_below_10_per_second(emulator: QuoEmulator) -> None:
    call = emulator.add_call(segments=1)
    quo = api_provider(emulator)
    started = time.monotonic()
    for _ in range(12):
        quo.resolve({"call_id": call.id})
    assert time.monotonic() - started >= 11 / 9  # 12 calls, 1/9 s apart
    assert all(r.status == 200 for r in emulator.requests)


def test_pacer_spaces_calls_from_a_fake_clock() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 3))
        clock[0] += seconds

    pacer = Pacer(10, clock=lambda: clock[0], sleep=sleep)
    waits = [round(pacer.wait(), 3) for _ in range(3)]
    assert waits == [0.0, 0.1, 0.1] and slept == [0.1, 0.1]
    clock[0] += 5
    assert pacer.wait() == 0.0
    with pytest.raises(ValueError):
        Pacer(0)


# -- reconciliation: conversations → calls → call lookups ------------------------------------

NOW = datetime.now(UTC).replace(microsecond=0)
SINCE, UNTIL = NOW - timedelta(hours=1), NOW
NUMBERS = ("+18005550100", "+18005550111", "+18005550122")


def lister(emulator: QuoEmulator, page_size: int = 2, **kwargs: Any) -> QuoProvider:
    """A provider paging by ``page_size`` (so every walk crosses pages)."""
    return QuoProvider(
        account(api_base=emulator.base_url, api_key=emulator.api_key),
        new_http_client(5),
        page_size=page_size,
        **kwargs,
    )


def polled(quo: QuoProvider, since: datetime = SINCE, until: datetime = UNTIL) -> dict[str, Any]:
    """``{call id: ref}`` of ``list_recordings``; every ref is the call.completed lookup."""
    refs = list(quo.list_recordings(since, until))
    assert all(r.ledger_key == f"lookup:call_id={r.call_id}&event=call.completed" for r in refs)
    by_call = {r.call_id: r for r in refs}
    assert len(by_call) == len(refs)  # one ref per call
    return by_call


def at(minutes_ago: float) -> datetime:
    return NOW - timedelta(minutes=minutes_ago)


def test_list_walks_every_conversation_and_page_into_one_lookup_per_call(
    emulator: QuoEmulator,
) -> None:
    calls = [
        emulator.add_call(
            created_at=at(50 - 3 * n), phone_number_id=line, participant=number, segments=n % 3
        )
        for n, (line, number) in enumerate(
            (line, number) for line in ("PNline1", "PNline2") for number in NUMBERS for _ in "ab"
        )
    ]
    quo = lister(emulator)
    pages = list(quo.list_pages(SINCE, UNTIL))
    assert len(pages) == 6  # one per (line, participant)
    found = polled(quo)
    assert set(found) == {c.id for c in calls}
    paths = [r.path for r in emulator.requests]
    assert paths.count("/v1/conversations") >= 3 * 2  # 6 conversations by 2, walked twice
    assert paths.count("/v1/calls") == 6 * 2  # 2 calls per pair: one page each, twice
    ref = found[calls[0].id]
    assert ref.recording_id is None and dict(ref.lookup)["event"] == "call.completed"
    assert ref.hints["completedAt"].endswith("Z") and ref.hints["status"] == "completed"


def test_calls_outside_the_window_are_skipped_long_and_busy_calls_are_not(
    emulator: QuoEmulator,
) -> None:
    before = emulator.add_call(created_at=at(120), duration=60)  # ended long before SINCE
    after = emulator.add_call(created_at=NOW + timedelta(minutes=1))
    long_call = emulator.add_call(created_at=at(200), duration=9000)  # ends 50 min ago
    inside = emulator.add_call(created_at=at(30), participant=NUMBERS[1])
    # A later message moves the conversation past UNTIL: it is listed all the same.
    emulator.add_activity("PNtoDbDhuz", NUMBERS[1], NOW + timedelta(minutes=30))
    found = polled(lister(emulator), until=NOW + timedelta(seconds=30))
    assert set(found) == {long_call.id, inside.id}
    assert before.id not in found and after.id not in found


def test_live_calls_are_left_to_the_poll_that_holds_their_end(emulator: QuoEmulator) -> None:
    live = emulator.add_call(created_at=at(40), call_status="in-progress", segments=2)
    missed = emulator.add_call(created_at=at(30), call_status="missed", segments=0)
    quo = lister(emulator)
    assert set(polled(quo)) == {missed.id}  # a missed call is over: listed, resolves to none
    emulator.finish_call(live.id, at=NOW + timedelta(minutes=20))
    later = polled(quo, NOW + timedelta(minutes=10), NOW + timedelta(minutes=25))
    assert set(later) == {live.id}  # created before this window, ended in it
    with pytest.raises(NothingToCapture):
        quo.resolve(dict(later[live.id].lookup) | {"call_id": missed.id})


def test_a_polled_call_has_the_lookup_of_its_call_completed_webhook(
    emulator: QuoEmulator,
) -> None:
    call = emulator.add_call(created_at=at(20), segments=2)
    (ref,) = polled(lister(emulator)).values()
    body = call_event_body(call, event_type="call.completed")
    (announced,) = provider().parse(request(body, {})).recordings
    assert ref.ledger_key == announced.ledger_key  # one lookup row for webhook and poll
    resolved = lister(emulator).resolve(dict(ref.lookup))
    assert [r.recording_id for r in resolved] == [rec.id for rec in call.recordings]


def test_phone_numbers_stay_out_of_hints_logs_and_errors(
    emulator: QuoEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="providers")
    emulator.add_call(created_at=at(20), participant=NUMBERS[2])
    emulator.add_call(created_at=at(25), participant="5550199")  # not E.164: Quo refuses it
    emulator.inject("api", "503")
    quo = lister(emulator, sleep=lambda _: None)
    refs = list(quo.list_recordings(SINCE, UNTIL))
    assert len(refs) == 1  # the refused conversation is skipped, the rest listed
    assert "refused the calls of one conversation" in caplog.text
    assert "retrying in" in caplog.text
    with pytest.raises(PermanentFailure) as refused:  # Quo echoes the numbers it refuses
        list(quo._walk(quo._api(), "/v1/calls", {"participants": NUMBERS[:2]}, "calls"))
    assert "/participants" in refused.value.reason
    hints = json.dumps([dict(r.hints) for r in refs])
    for text in (hints, caplog.text, refused.value.reason, str(refused.value)):
        assert not any(number[2:] in text for number in (*NUMBERS, "+15550199"))


def test_error_reasons_mask_numbers_quo_echoes() -> None:
    body = {
        "message": "No calls for +18005550100 or 18005550111",
        "title": "Bad Request",
        "code": "0900400",
        "errors": [{"path": "/participants/0", "message": "+1 800 555 0122"}],
    }
    text = provider().describe_error(httpx.Response(400, content=json.dumps(body).encode()))
    assert text == ("HTTP 400 0900400 Bad Request: No calls for +… or +…; /participants/0: +…")


def test_rate_limit_in_a_listing_is_waited_out_or_handed_to_the_account_pause(
    emulator: QuoEmulator,
) -> None:
    emulator.add_call(created_at=at(10))
    emulator.inject("api", "429", times=2, retry_after=1)
    started = time.monotonic()
    assert len(polled(lister(emulator))) == 1
    assert time.monotonic() - started >= 2.0  # both Retry-After: 1 waited out
    assert [r.status for r in emulator.requests][:3] == [429, 429, 200]
    emulator.inject("api", "429", retry_after=60)  # too long to wait in a walk
    with pytest.raises(RateLimited) as caught:
        list(lister(emulator).list_recordings(SINCE, UNTIL))
    assert caught.value.retry_after == 60.0


def test_a_listing_keeps_to_10_requests_per_second() -> None:
    with QuoEmulator() as limited:  # the emulator's 10/s per key is enforced
        for number in range(12):
            limited.add_call(created_at=at(30), participant=f"+1800555{number:04d}")
        started = time.monotonic()
        assert len(polled(lister(limited, page_size=100))) == 12
        assert time.monotonic() - started >= 13 / 9  # 2 conversation pages + 12 calls requests
        assert {r.status for r in limited.requests} == {200}


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (datetime(2024, 1, 1), datetime(2024, 1, 2)),  # naive
        (SINCE, datetime(2030, 1, 1)),  # one naive
        (UNTIL, SINCE),  # reversed
    ],
)
def test_naive_or_reversed_windows_are_refused(since: datetime, until: datetime) -> None:
    with pytest.raises(ValueError):
        list(provider().list_recordings(since, until))
