"""Twilio: callback signatures (checked against twilio-python's own validator), payload shapes,
error bodies, and the capture side against the real emulator over HTTP."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import Headers, MultiDict

from emulators.twilio import (
    EmulatedRecording,
    TwilioCallbackSigner,
    TwilioEmulator,
    callback_params,
)
from providers.base import Account, Provider, WebhookRequest
from providers.errors import (
    ConfigurationMissing,
    NotReadyYet,
    PayloadInvalid,
    PermanentFailure,
    RetryLater,
    SignatureInvalid,
    UrlExpired,
)
from providers.http import new_http_client
from providers.signing import twilio_signature
from providers.telnyx import TelnyxProvider
from providers.twilio import TwilioProvider
from tests.providers.contract import ProviderWebhookContract
from workers.download import open_audio

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "twilio"
TOKEN = "12345678901234567890123456789012"
ACCOUNT_SID = "AC3f1d0c6e2b7a49e8b5c4d3e2f1a0b9c8"
URL = "https://calls.example.com/webhooks/twilio"
SIGNER = TwilioCallbackSigner(TOKEN)
COMPLETED = (PAYLOADS / "recording.completed.form").read_bytes()


def account(
    token: str | None = TOKEN,
    sid: str | None = ACCOUNT_SID,
    api_base: str = "http://127.0.0.1:9",
    fmt: str = "wav",
    audio_hosts: tuple[str, ...] = ("127.0.0.1",),
) -> Account:
    return Account(
        provider="twilio",
        name="default",
        api_base=api_base,
        audio_hosts=audio_hosts,
        credentials={"account_sid": sid, "auth_token": token},
        options={"format": fmt},
        sources={
            "account_sid": "CALLREC_TWILIO_ACCOUNT_SID",
            "auth_token": "CALLREC_TWILIO_AUTH_TOKEN",
        },
    )


def provider(**kwargs: str | None) -> TwilioProvider:
    return TwilioProvider(account(**kwargs), new_http_client(5))  # type: ignore[arg-type]


def request(
    body: bytes,
    signature: str | None,
    url: str = URL,
    content_type: str = "application/x-www-form-urlencoded",
) -> WebhookRequest:
    headers = Headers() if signature is None else Headers({"X-Twilio-Signature": signature})
    return WebhookRequest(
        body=body, headers=headers, content_type=content_type, url=url, received_at=time.time()
    )


def twilio_sign(body: bytes, url: str = URL, token: str = TOKEN) -> str:
    """The signature as twilio-python computes it, over the params a framework would hand it."""
    return RequestValidator(token).compute_signature(
        url, MultiDict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    )


class TestTwilioWebhookContract(ProviderWebhookContract):
    content_type = "application/x-www-form-urlencoded"

    def make_provider(self) -> Provider:
        return provider()

    def signed(self, body: bytes, *, now: float | None = None) -> WebhookRequest:
        return request(body, twilio_sign(body))

    def capture_body(self) -> bytes:
        return COMPLETED

    def ignored_body(self) -> bytes:
        return (PAYLOADS / "recording.in-progress.form").read_bytes()

    def tamper(self, body: bytes) -> bytes:
        return body.replace(b"RecordingDuration=42", b"RecordingDuration=43")


# -- signature vectors, each checked against twilio-python's RequestValidator -------------------


@pytest.mark.parametrize(
    "params",
    [
        [("RecordingSid", "RE1"), ("AccountSid", "AC1"), ("RecordingStatus", "completed")],
        [("b", "2"), ("a", "x"), ("a", "y"), ("a", "x")],  # repeated names and values
        [("Caf\u00e9", "\u00fc ber&=?"), ("empty", "")],
        [],
    ],
)
@pytest.mark.parametrize(
    "url",
    [URL, "https://calls.example.com:8443/webhooks/twilio", f"{URL}?account=x&y=%20z"],
)
def test_our_signature_is_twilios(params: list[tuple[str, str]], url: str) -> None:
    validator = RequestValidator(TOKEN)
    ours = twilio_signature(TOKEN, url, params)
    assert ours == validator.compute_signature(url, MultiDict(params))
    assert validator.validate(url, MultiDict(params), SIGNER.signature(url, params))


def test_published_example_vector() -> None:
    """Twilio's documented example (webhooks-security page; twilio-python's test suite)."""
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_valid_signature_verifies() -> None:
    provider().verify(request(COMPLETED, twilio_sign(COMPLETED)))


@pytest.mark.parametrize(
    ("called", "signed"),
    [
        (
            "https://calls.example.com/webhooks/twilio",
            "https://calls.example.com:443/webhooks/twilio",
        ),
        (
            "https://calls.example.com:443/webhooks/twilio",
            "https://calls.example.com/webhooks/twilio",
        ),
        ("http://calls.example.com:80/webhooks/twilio", "http://calls.example.com/webhooks/twilio"),
        (
            "https://calls.example.com:8443/webhooks/twilio",
            "https://calls.example.com/webhooks/twilio",
        ),
    ],
)
def test_url_with_and_without_port_verifies_as_twilio_accepts_it(called: str, signed: str) -> None:
    signature = twilio_sign(COMPLETED, signed)
    assert RequestValidator(TOKEN).validate(
        called, MultiDict(parse_qsl(COMPLETED.decode())), signature
    )
    provider().verify(request(COMPLETED, signature, called))


def test_query_string_is_part_of_the_signed_url() -> None:
    url = f"{URL}?tenant=a"
    provider().verify(request(COMPLETED, twilio_sign(COMPLETED, url), url))
    with pytest.raises(SignatureInvalid):
        provider().verify(request(COMPLETED, twilio_sign(COMPLETED, url), f"{URL}?tenant=b"))


@pytest.mark.parametrize(
    ("case", "body", "signature", "url"),
    [
        ("tampered param", COMPLETED.replace(b"=42", b"=41"), twilio_sign(COMPLETED), URL),
        ("wrong token", COMPLETED, twilio_sign(COMPLETED, token="x" * 32), URL),
        ("other scheme", COMPLETED, twilio_sign(COMPLETED), URL.replace("https", "http")),
        ("other host", COMPLETED, twilio_sign(COMPLETED), URL.replace("calls.", "evil.")),
        ("other path", COMPLETED, twilio_sign(COMPLETED), URL + "/x"),
        ("empty header", COMPLETED, "", URL),
        ("garbage header", COMPLETED, "not base64 at all", URL),
        ("added param", COMPLETED + b"&Extra=1", twilio_sign(COMPLETED), URL),
    ],
)
def test_bad_signatures_are_rejected_as_twilio_rejects_them(
    case: str, body: bytes, signature: str, url: str
) -> None:
    params = MultiDict(parse_qsl(body.decode(), keep_blank_values=True))
    assert not RequestValidator(TOKEN).validate(url, params, signature)
    with pytest.raises(SignatureInvalid):
        provider().verify(request(body, signature, url))


def test_missing_header_is_rejected() -> None:
    with pytest.raises(SignatureInvalid):
        provider().verify(request(COMPLETED, None))


def test_repeated_params_verify_like_twilio() -> None:
    body = COMPLETED + b"&Tag=b&Tag=a&Tag=b"
    signature = twilio_sign(body)
    provider().verify(request(body, signature))


def test_json_body_scheme_checks_the_body_hash() -> None:
    """Twilio's bodySHA256 scheme (JSON webhooks): URL-only signature plus the body's hash."""
    body = b'{"RecordingSid": "RE1"}'
    url = f"{URL}?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    assert RequestValidator(TOKEN).validate(url, body.decode(), signature)
    provider().verify(request(body, signature, url, "application/json"))
    with pytest.raises(SignatureInvalid):
        provider().verify(request(body + b" ", signature, url, "application/json"))


@pytest.mark.parametrize("token", [None, ""])
def test_missing_auth_token_fails_closed_naming_the_setting(token: str | None) -> None:
    with pytest.raises(ConfigurationMissing, match="CALLREC_TWILIO_AUTH_TOKEN"):
        provider(token=token).verify(request(COMPLETED, twilio_sign(COMPLETED)))


def test_signer_headers_are_what_twilio_sends() -> None:
    params = [("RecordingSid", "RE" + "0" * 32), ("RecordingStatus", "completed")]
    body, headers = SIGNER.sign(URL, params)
    assert body == urlencode(params).encode()
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert RequestValidator(TOKEN).validate(URL, MultiDict(params), headers["X-Twilio-Signature"])


# -- payload shapes ---------------------------------------------------------------------------


def parse(name: str) -> tuple[str, str, tuple[object, ...]]:
    event = provider().parse(request((PAYLOADS / name).read_bytes(), None))
    return event.delivery_id, event.event_type, event.recordings


def test_completed_callback_names_the_recording_with_hints() -> None:
    event = provider().parse(request(COMPLETED, None))
    assert event.delivery_id == "RE1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d:completed"
    (ref,) = event.recordings
    assert ref.recording_id == "RE1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d"
    assert ref.call_id == "CA9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b"
    assert ref.hints == {
        "account_sid": ACCOUNT_SID,
        "status": "completed",
        "error_code": "0",
        "duration": "42",
        "channels": "2",
        "start_time": "Mon, 23 Nov 2026 14:01:02 +0000",
        "source": "RecordVerb",
        "track": "both",
    }


def test_confirmed_fields_only_is_enough() -> None:
    (ref,) = (
        provider()
        .parse(
            request(
                PAYLOADS.joinpath("recording.completed.confirmed-fields-only.form").read_bytes(),
                None,
            )
        )
        .recordings
    )
    assert ref.recording_id and ref.hints["status"] == "completed"
    assert "start_time" not in ref.hints and "error_code" not in ref.hints


def test_phone_numbers_and_urls_are_never_kept() -> None:
    body = (PAYLOADS / "recording.completed.with-phone-numbers.form").read_bytes()
    (ref,) = provider().parse(request(body, None)).recordings
    kept = str(ref.hints) + str(ref.call_id)
    assert "+1555" not in kept and "http" not in kept


def test_absent_callback_is_a_row_that_carries_its_error_code() -> None:
    delivery, event_type, (ref,) = parse("recording.absent.form")
    assert (delivery.endswith(":absent"), event_type) == (True, "recording.absent")
    assert ref.hints["status"] == "absent" and ref.hints["error_code"] == "16101"  # type: ignore[attr-defined]
    with pytest.raises(PermanentFailure, match=r"absent \(ErrorCode 16101\)"):
        provider().fetch_recording(ref.recording_id, ref.hints)  # type: ignore[attr-defined]


def test_in_progress_is_acknowledged_and_ignored() -> None:
    delivery, event_type, recordings = parse("recording.in-progress.form")
    assert (event_type, recordings) == ("recording.in-progress", ())
    assert delivery.endswith(":in-progress")


def test_deliveries_dedupe_on_recording_and_status() -> None:
    first = provider().parse(request(COMPLETED, None)).delivery_id
    again = provider().parse(request(COMPLETED.replace(b"&ErrorCode=0", b""), None)).delivery_id
    absent = provider().parse(request(COMPLETED.replace(b"=completed", b"=absent"), None))
    assert first == again != absent.delivery_id


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"RecordingStatus=completed&AccountSid=" + ACCOUNT_SID.encode(),
        COMPLETED.replace(b"RecordingSid=RE", b"RecordingSid=XX"),
        COMPLETED.replace(b"AccountSid=AC3", b"AccountSid=../"),
        COMPLETED + b"&RecordingStatus=absent",  # the same field twice, different values
        COMPLETED + b"&stray",
        COMPLETED + b"&x=%ff",
        COMPLETED.replace(b"RecordingStatus=completed&", b""),
    ],
)
def test_malformed_forms_are_payload_errors(body: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        provider().parse(request(body, None))


# -- error bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (
            429,
            b'{"code": 20429, "message": "Too Many Requests", "more_info": '
            b'"https://www.twilio.com/docs/errors/20429", "status": 429}',
            "HTTP 429 Twilio error 20429: Too Many Requests "
            "(https://www.twilio.com/docs/errors/20429)",
        ),
        (
            404,
            b'{"code": 20404, "message": "not found", "status": 404}',
            "HTTP 404 Twilio error 20404: not found",
        ),
        (502, b"<html>bad gateway</html>", "HTTP 502"),
        (500, b'{"message": "no code"}', "HTTP 500"),
    ],
)
def test_error_bodies_become_clear_reasons(status: int, body: bytes, reason: str) -> None:
    assert provider().describe_error(httpx.Response(status, content=body)) == reason


# -- capture against the emulator -------------------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator() as running:
        yield running


def live(emulator: TwilioEmulator, fmt: str = "wav") -> TwilioProvider:
    acct = account(
        token=emulator.auth_token,
        sid=emulator.account_sid,
        api_base=emulator.base_url,
        fmt=fmt,
        audio_hosts=(emulator.audio_host,),
    )
    return TwilioProvider(acct, new_http_client(5))


def hints_of(emulator: TwilioEmulator, rec: EmulatedRecording) -> dict[str, object]:
    """The hints the ledger row of ``rec``'s completed callback carries."""
    body, _ = TwilioCallbackSigner(emulator.auth_token).sign(URL, callback_params(rec))
    (ref,) = provider().parse(request(body, None)).recordings
    return dict(ref.hints)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_fetch_then_download_with_basic_auth(emulator: TwilioEmulator, fmt: str) -> None:
    rec = emulator.add_recording(size=50_000, channels=2, duration=42)
    twilio = live(emulator, fmt)
    download = twilio.fetch_recording(rec.sid, hints_of(emulator, rec))
    assert (download.format, download.auth) == (fmt, (emulator.account_sid, emulator.auth_token))
    assert download.url == f"{emulator.base_url}{rec.path}.{fmt}"
    meta = download.metadata
    assert (meta["call_id"], meta["duration_seconds"], meta["channels"]) == (rec.call_sid, 42, 2)
    started = datetime.fromisoformat(str(meta["started_at"]))
    assert datetime.fromisoformat(str(meta["ended_at"])) - started == timedelta(seconds=42)
    assert "http" not in str(meta)
    with open_audio(twilio.http, download, twilio.account.audio_hosts, 10**9) as stream:
        data = b"".join(stream.chunks())
    assert stream.sha256 == rec.audio(fmt).sha256() and len(data) == rec.audio(fmt).size
    assert all(r.authorized for r in emulator.requests)


def test_encrypted_recording_is_fetched_as_wav_even_when_mp3_is_set(
    emulator: TwilioEmulator,
) -> None:
    rec = emulator.add_recording(encrypted=True)
    download = live(emulator, "mp3").fetch_recording(rec.sid, {})
    assert download.format == "wav" and download.url.endswith(".wav")
    assert download.metadata["encrypted"] is True


@pytest.mark.parametrize(
    ("status", "error"), [("processing", NotReadyYet), ("in-progress", NotReadyYet)]
)
def test_unfinished_recordings_are_retried(
    emulator: TwilioEmulator, status: str, error: type[Exception]
) -> None:
    rec = emulator.add_recording(status=status)
    with pytest.raises(error):
        live(emulator).fetch_recording(rec.sid, {})


@pytest.mark.parametrize(
    ("status", "code"), [("absent", 16102), ("failed", 16104), ("deleted", None)]
)
def test_final_api_statuses_fail_with_the_error_code(
    emulator: TwilioEmulator, status: str, code: int | None
) -> None:
    rec = emulator.add_recording(status=status, error_code=code)
    with pytest.raises(PermanentFailure, match=f"{status} \\(ErrorCode {code or 'none given'}\\)"):
        live(emulator).fetch_recording(rec.sid, {})


def test_rate_limit_is_error_20429_with_retry_after(emulator: TwilioEmulator) -> None:
    rec = emulator.add_recording()
    emulator.inject("api", "429", retry_after=7)
    with pytest.raises(RetryLater, match="20429") as caught:
        live(emulator).fetch_recording(rec.sid, {})
    assert caught.value.retry_after == 7


def test_unknown_recording_and_bad_credentials_fail_permanently(emulator: TwilioEmulator) -> None:
    with pytest.raises(PermanentFailure, match=r"not found.*20404"):
        live(emulator).fetch_recording("RE" + "0" * 32, {})
    rec = emulator.add_recording()
    wrong = TwilioProvider(
        account(token="wrong", sid=emulator.account_sid, api_base=emulator.base_url),
        new_http_client(5),
    )
    with pytest.raises(PermanentFailure, match=r"credentials.*20003"):
        wrong.fetch_recording(rec.sid, {})


def test_missing_account_sid_is_a_configuration_error(emulator: TwilioEmulator) -> None:
    with pytest.raises(ConfigurationMissing, match="CALLREC_TWILIO_ACCOUNT_SID"):
        provider(sid=None).fetch_recording("RE" + "0" * 32, {})


def test_credentials_follow_a_same_host_redirect_only(emulator: TwilioEmulator) -> None:
    rec = emulator.add_recording(size=20_000)
    twilio = live(emulator)
    download = twilio.fetch_recording(rec.sid, {})
    hosts = (emulator.audio_host, f"localhost:{emulator.audio_host.split(':')[1]}")
    # Same host (a path redirect): the credentials go along and the media is served.
    emulator.inject("media", "redirect", location=f"{emulator.base_url}{rec.path}.wav")
    with open_audio(twilio.http, download, hosts, 10**9) as stream:
        assert b"".join(stream.chunks()) == rec.audio("wav").read()
    # Another host: the credentials stay behind, so that host answers 401 (a refused URL).
    emulator.clear_requests()
    emulator.inject("media", "redirect")
    with pytest.raises(UrlExpired, match="HTTP 401"):
        open_audio(twilio.http, download, hosts, 10**9).__enter__()
    first, second = emulator.requests
    assert (first.authorized, second.authorized) == (True, False)
    # A host outside the allow-list is never contacted.
    emulator.inject("media", "redirect")
    with pytest.raises(PermanentFailure, match="not in the allowed audio hosts"):
        open_audio(twilio.http, download, (emulator.audio_host,), 10**9).__enter__()


def test_list_recordings_pages_through_next_page_uri(
    emulator: TwilioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    inside = [emulator.add_recording(date_created=base + timedelta(minutes=i)) for i in range(5)]
    emulator.add_recording(date_created=base - timedelta(days=2))
    monkeypatch.setattr("providers.twilio.PAGE_SIZE", 2)  # follow next_page_uri twice
    refs = list(live(emulator).list_recordings(base, base + timedelta(hours=1)))
    assert sorted(r.recording_id or "" for r in refs) == sorted(r.sid for r in inside)
    assert {r.call_id for r in refs} == {r.call_sid for r in inside}
    lists = [r for r in emulator.requests if r.path.endswith("Recordings.json")]
    assert len(lists) == 3


def test_resolve_lists_a_calls_recordings(emulator: TwilioEmulator) -> None:
    a = emulator.add_recording(call_sid="CA" + "1" * 32)
    b = emulator.add_recording(call_sid="CA" + "1" * 32)
    emulator.add_recording()
    refs = live(emulator).resolve({"call_sid": "CA" + "1" * 32})
    assert {r.recording_id for r in refs} == {a.sid, b.sid}


# -- Telnyx TeXML: the same form, on the Telnyx provider --------------------------------------


def texml(body: bytes) -> tuple[TelnyxProvider, WebhookRequest]:
    from tests.providers.test_telnyx import SIGNER as TELNYX_SIGNER
    from tests.providers.test_telnyx import provider as telnyx_provider

    headers = Headers(TELNYX_SIGNER.headers(body))
    signed = WebhookRequest(body, headers, "application/x-www-form-urlencoded", URL, time.time())
    return telnyx_provider(), signed


def test_texml_callback_is_verified_with_the_telnyx_key_and_parsed() -> None:
    body = (PAYLOADS.parent / "telnyx" / "texml.recording.completed.form").read_bytes()
    telnyx, signed = texml(body)
    telnyx.verify(signed)
    telnyx.check_content_type(signed)
    event = telnyx.parse(signed)
    assert event.delivery_id == "texml:10cd86ac-5a0e-4a1e-9d38-0a7b1b7c8f21:completed"
    (ref,) = event.recordings
    assert ref.call_id == "v3:aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
    assert ref.hints["channels"] == "2" and "http" not in str(ref.hints)


def test_texml_absent_callback_ends_failed_without_an_api_call() -> None:
    body = (PAYLOADS.parent / "telnyx" / "texml.recording.completed.form").read_bytes()
    telnyx, signed = texml(body.replace(b"=completed", b"=absent") + b"&ErrorCode=16101")
    (ref,) = telnyx.parse(signed).recordings
    with pytest.raises(PermanentFailure, match=r"Telnyx reported the recording absent"):
        telnyx.fetch_recording(ref.recording_id or "", ref.hints)
