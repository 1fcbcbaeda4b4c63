"""What the receiver benchmark sends to each provider route: distinct, correctly signed webhooks.

One :class:`WebhookLoad` per provider: the settings its verifier needs (shared by callrec and
the bare baseline, so both verify the same signature with the same key) and one signed
request per index. Signing uses the provider's emulator sender, exactly as in the tests. A new
provider adds one class here and one entry in :data:`LOADS`.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["LOADS", "PUBLIC_BASE_URL", "SignedRequest", "WebhookLoad"]

#: Both servers believe they are reached at this URL (Twilio signs the full public URL).
PUBLIC_BASE_URL = "https://callrec.bench.invalid"


@dataclass(frozen=True)
class SignedRequest:
    headers: dict[str, str]
    body: bytes


class WebhookLoad(abc.ABC):
    """Signed deliveries for one provider's ``POST /webhooks/<provider>``."""

    provider: ClassVar[str]

    @property
    def route(self) -> str:
        return f"/webhooks/{self.provider}"

    @abc.abstractmethod
    def env(self) -> dict[str, str]:
        """``CALLREC_*`` settings the route needs to verify (never used to call an API)."""

    @abc.abstractmethod
    def request(self, tag: str, index: int) -> SignedRequest:
        """Delivery ``index`` of batch ``tag``: its own delivery and recording ids, signed now."""


class TelnyxLoad(WebhookLoad):
    provider = "telnyx"

    def __init__(self) -> None:
        from emulators.telnyx import TelnyxWebhookSigner

        self._signer = TelnyxWebhookSigner()

    def env(self) -> dict[str, str]:
        return {
            "CALLREC_TELNYX_API_KEY": "bench-not-used",
            "CALLREC_TELNYX_PUBLIC_KEY": self._signer.public_key_b64,
        }

    def request(self, tag: str, index: int) -> SignedRequest:
        from emulators.telnyx import recording_saved_body

        body = recording_saved_body(None, event_id=f"bench-{tag}-{index}")
        return SignedRequest(self._signer.headers(body), body)


class QuoLoad(WebhookLoad):
    """Even deliveries signed with Standard Webhooks, odd ones with the legacy HMAC header."""

    provider = "quo"

    def __init__(self) -> None:
        from emulators.quo import QuoWebhookSender

        self._sender = QuoWebhookSender()

    def env(self) -> dict[str, str]:
        return {
            "CALLREC_QUO_API_KEY": "bench-not-used",
            "CALLREC_QUO_SIGNING_KEY": self._sender.signing_key_b64,
            "CALLREC_QUO_WEBHOOK_SECRET": self._sender.webhook_secret,
        }

    def request(self, tag: str, index: int) -> SignedRequest:
        from emulators.quo import call_event_body

        body = call_event_body(event_id=f"EVbench{tag}{index}")
        if index % 2 == 0:
            return SignedRequest(self._sender.standard_headers(body), body)
        return SignedRequest(self._sender.legacy_headers(body), body)


class TwilioLoad(WebhookLoad):
    """Recording status callbacks (form-encoded), signed for ``PUBLIC_BASE_URL`` + the route."""

    provider = "twilio"
    account_sid = "AC" + "0b" * 16
    auth_token = "bench-twilio-auth-token"

    def env(self) -> dict[str, str]:
        return {
            "CALLREC_TWILIO_ACCOUNT_SID": self.account_sid,
            "CALLREC_TWILIO_AUTH_TOKEN": self.auth_token,
        }

    def request(self, tag: str, index: int) -> SignedRequest:
        from datetime import UTC, datetime

        from emulators.twilio import EmulatedRecording, TwilioCallbackSigner, callback_params

        now = datetime.now(UTC)
        digest = hashlib.sha256(f"{tag}/{index}".encode()).hexdigest()
        recording = EmulatedRecording(
            sid="RE" + digest[:32],
            account_sid=self.account_sid,
            call_sid="CA" + digest[32:],
            status="completed",
            channels=2,
            duration=42,
            start_time=now,
            date_created=now,
            seed="bench",
            size=1,
        )
        url = PUBLIC_BASE_URL + self.route
        body, headers = TwilioCallbackSigner(self.auth_token).sign(url, callback_params(recording))
        return SignedRequest(headers, body)


LOADS: dict[str, type[WebhookLoad]] = {
    load.provider: load for load in (TelnyxLoad, QuoLoad, TwilioLoad)
}
