"""Telnyx webhook verification and parsing, with real Ed25519 signatures and captured bodies."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey
from werkzeug.datastructures import Headers

from emulators.telnyx import TelnyxWebhookSigner
from providers.base import Account, Provider, WebhookRequest
from providers.errors import ConfigurationMissing, SignatureInvalid
from providers.http import new_http_client
from providers.telnyx import TelnyxProvider
from tests.providers.contract import ProviderWebhookContract

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads" / "telnyx"
SIGNER = TelnyxWebhookSigner(SigningKey(b"\x01" * 32))


def account(public_key: str | None = SIGNER.public_key_b64) -> Account:
    return Account(
        provider="telnyx",
        name="default",
        api_base="http://127.0.0.1:9/v2",
        audio_hosts=("127.0.0.1",),
        credentials={"api_key": "k", "public_key": public_key},
        options={"format": "mp3"},
        sources={"public_key": "CALLREC_TELNYX_PUBLIC_KEY"},
    )


def request(body: bytes, headers: dict[str, str], now: float | None = None) -> WebhookRequest:
    return WebhookRequest(
        body=body,
        headers=Headers(headers),
        content_type="application/json",
        url="http://127.0.0.1/webhooks/telnyx",
        received_at=time.time() if now is None else now,
    )


class TestTelnyxWebhookContract(ProviderWebhookContract):
    def make_provider(self) -> Provider:
        return TelnyxProvider(account(), new_http_client(1))

    def signed(self, body: bytes, *, now: float | None = None) -> WebhookRequest:
        return request(body, SIGNER.headers(body), now)

    def capture_body(self) -> bytes:
        return (PAYLOADS / "call.recording.saved.tutorial.json").read_bytes()

    def ignored_body(self) -> bytes:
        return (PAYLOADS / "call.hangup.json").read_bytes()


def provider(public_key: str | None = SIGNER.public_key_b64) -> TelnyxProvider:
    return TelnyxProvider(account(public_key), new_http_client(1))


BODY = (PAYLOADS / "call.recording.saved.tutorial.json").read_bytes()


@pytest.mark.parametrize("skew", [-299, 0, 299])
def test_timestamps_within_300s_either_way_verify(skew: int) -> None:
    now = time.time()
    provider().verify(request(BODY, SIGNER.headers(BODY, int(now) + skew), now))


@pytest.mark.parametrize("skew", [-302, 302, -86400])
def test_stale_and_future_timestamps_are_rejected(skew: int) -> None:
    now = time.time()
    with pytest.raises(SignatureInvalid):
        provider().verify(request(BODY, SIGNER.headers(BODY, int(now) + skew), now))


def test_signature_from_another_key_is_rejected() -> None:
    other = TelnyxWebhookSigner(SigningKey(b"\x02" * 32))
    with pytest.raises(SignatureInvalid):
        provider().verify(request(BODY, other.headers(BODY)))


def test_timestamp_is_part_of_the_signed_message() -> None:
    headers = SIGNER.headers(BODY, int(time.time()))
    headers["telnyx-timestamp"] = str(int(headers["telnyx-timestamp"]) - 1)
    with pytest.raises(SignatureInvalid):
        provider().verify(request(BODY, headers))


@pytest.mark.parametrize("signature", ["", "not base64!", base64.b64encode(b"x" * 63).decode()])
def test_malformed_signatures_are_rejected(signature: str) -> None:
    headers = SIGNER.headers(BODY)
    headers["telnyx-signature-ed25519"] = signature
    with pytest.raises(SignatureInvalid):
        provider().verify(request(BODY, headers))


def test_headers_are_case_insensitive() -> None:
    headers = {key.upper(): value for key, value in SIGNER.headers(BODY).items()}
    provider().verify(request(BODY, headers))


@pytest.mark.parametrize("key", [None, "", "bm90IGEga2V5", "%%%"])
def test_missing_or_bad_public_key_fails_closed_naming_the_setting(key: str | None) -> None:
    with pytest.raises(ConfigurationMissing, match="CALLREC_TELNYX_PUBLIC_KEY"):
        provider(key).verify(request(BODY, SIGNER.headers(BODY)))


def test_parse_live_shape_with_recording_id() -> None:
    event = provider().parse(request(BODY, {}))
    assert event.delivery_id == "bf6f3f8a-2d46-4a53-8b0f-3d1f5a0c7e11"
    assert event.event_type == "call.recording.saved"
    (ref,) = event.recordings
    assert ref.recording_id == "10cd86ac-5a0e-4a1e-9d38-0a7b1b7c8f21"
    assert ref.call_id == "84a97d76-e40f-11ed-9074-02420a0daa69"
    assert ref.ledger_key == ref.recording_id
    assert ref.hints["recording_started_at"] == "2026-11-23T14:01:02.574Z"
    assert not any("http" in str(value) for value in ref.hints.values())  # no signed URLs kept


def test_parse_sdk_shape_without_recording_id_becomes_a_lookup() -> None:
    body = (PAYLOADS / "call.recording.saved.sdk-example.json").read_bytes()
    (ref,) = provider().parse(request(body, {})).recordings
    assert ref.recording_id is None
    assert ref.lookup == (("call_session_id", "428c31b6-abf2-4bcb-b7f5-5013ef9657c1"),)
    assert ref.ledger_key == "lookup:call_session_id=428c31b6-abf2-4bcb-b7f5-5013ef9657c1"


def test_recording_error_event_is_acknowledged_and_ignored() -> None:
    body = (PAYLOADS / "call.recording.error.json").read_bytes()
    event = provider().parse(request(body, {}))
    assert event.event_type == "call.recording.error"
    assert event.recordings == ()


def test_redelivery_with_new_attempt_keeps_the_delivery_id() -> None:
    first = provider().parse(request(BODY, {}))
    second = provider().parse(request(BODY.replace(b'"attempt":1', b'"attempt":2'), {}))
    assert first.delivery_id == second.delivery_id


@pytest.mark.parametrize(
    "body",
    [
        b'{"data":{"event_type":"call.recording.saved","payload":{}}}',
        b'{"data":{"id":"x","event_type":"call.recording.saved","payload":{}}}',
        b'{"data":{"id":"x","event_type":"call.recording.saved","payload":[]}}',
        b'{"data":{"id":"x","event_type":"call.recording.saved","payload":{"recording_id":5}}}',
        b'{"data":{"id":"' + b"x" * 300 + b'","event_type":"call.recording.saved"}}',
    ],
)
def test_unknown_shapes_are_payload_errors(body: bytes) -> None:
    from providers.errors import PayloadInvalid

    with pytest.raises(PayloadInvalid):
        provider().parse(request(body, {}))
