"""The promises every provider's webhook side keeps; each provider's test class inherits this.

A subclass supplies a provider, a way to sign a body as the provider does, a captured body
announcing a recording and one of an event type we ignore. (anymail's ``WebhookTestCase``
idea, with real signatures and captured bytes.)
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest
from werkzeug.datastructures import Headers

from providers.base import Provider, WebhookRequest
from providers.errors import PayloadInvalid, SignatureInvalid, UnsupportedMediaType


def webhook_request(
    body: bytes,
    headers: Mapping[str, str],
    path: str,
    now: float | None = None,
    content_type: str = "application/json",
) -> WebhookRequest:
    """A request as the view builds it (case-insensitive headers), received ``now``."""
    return WebhookRequest(
        body=body,
        headers=Headers(dict(headers)),
        content_type=content_type,
        url=f"http://127.0.0.1{path}",
        received_at=time.time() if now is None else now,
    )


class ProviderWebhookContract:
    content_type: str = "application/json"

    # -- supplied by each provider's test class -------------------------------------------------
    def make_provider(self) -> Provider:
        raise NotImplementedError

    def signed(self, body: bytes, *, now: float | None = None) -> WebhookRequest:
        raise NotImplementedError

    def capture_body(self) -> bytes:
        raise NotImplementedError

    def ignored_body(self) -> bytes:
        raise NotImplementedError

    def tamper(self, body: bytes) -> bytes:
        """``body`` with one signed byte changed (a form body has no quotes to swap)."""
        return body.replace(b'"', b"'", 1)

    # -- the contract ---------------------------------------------------------------------------
    def test_valid_signature_verifies(self) -> None:
        self.make_provider().verify(self.signed(self.capture_body()))

    def test_tampered_body_is_rejected(self) -> None:
        request = self.signed(self.capture_body())
        tampered = WebhookRequest(
            body=self.tamper(request.body),
            headers=request.headers,
            content_type=request.content_type,
            url=request.url,
            received_at=request.received_at,
        )
        with pytest.raises(SignatureInvalid):
            self.make_provider().verify(tampered)

    def test_missing_signature_headers_are_rejected(self) -> None:
        request = self.signed(self.capture_body())
        bare = WebhookRequest(
            body=request.body,
            headers={},
            content_type=request.content_type,
            url=request.url,
            received_at=request.received_at,
        )
        with pytest.raises(SignatureInvalid):
            self.make_provider().verify(bare)

    def test_capture_event_names_a_recording(self) -> None:
        event = self.make_provider().parse(self.signed(self.capture_body()))
        assert event.delivery_id
        assert len(event.recordings) >= 1

    def test_other_event_types_are_ignored_not_errors(self) -> None:
        event = self.make_provider().parse(self.signed(self.ignored_body()))
        assert event.recordings == ()

    @pytest.mark.parametrize(
        "body", [b"{", b"[]", b"\xff\xfe", b"[" * 100_000, b"1" * 5000, b"{}", b'{"data": 1}']
    )
    def test_malformed_bodies_are_payload_errors(self, body: bytes) -> None:
        with pytest.raises(PayloadInvalid):
            self.make_provider().parse(self.signed(body))

    def test_foreign_content_type_is_415(self) -> None:
        request = self.signed(self.capture_body())
        odd = WebhookRequest(
            body=request.body,
            headers=request.headers,
            content_type="text/plain",
            url=request.url,
            received_at=request.received_at,
        )
        with pytest.raises(UnsupportedMediaType):
            self.make_provider().check_content_type(odd)

    def test_sent_content_type_is_accepted(self) -> None:
        self.make_provider().check_content_type(self.signed(self.capture_body()))

    @staticmethod
    def now() -> float:
        return time.time()
