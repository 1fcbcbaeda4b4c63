"""Telnyx: Ed25519-signed ``call.recording.saved`` webhooks and the Call Recordings API.

Signature: https://developers.telnyx.com/docs/development/sdk/python/webhooks — Ed25519 over
``f"{telnyx-timestamp}|{raw body}"``, 300 s tolerance both ways (as telnyx-python's
``lib/webhook_verification.py``). The SDK's generated ``unwrap()`` checks Standard Webhooks HMAC
instead and rejects real Telnyx events, so we verify ourselves.

TeXML applications post Twilio-shaped form callbacks instead (providers.md §1.1c), signed with
the same Ed25519 headers over the raw form body (§7: telnyx-php#96 verified them, then failed
to JSON-decode them). They are read here, on ``/webhooks/telnyx``, not on the Twilio route: the
key, the API and the recording ids are Telnyx's, and one ledger identity (provider ``telnyx``)
keeps a TeXML recording from being stored twice when the Telnyx list API also returns it.
``RecordingSid`` is taken as the ``/recordings/{id}`` id (UNCONFIRMED in the notes).

Payloads vary: ``data.payload.recording_id`` is present in live events but absent from the SDK
model; without it the worker looks the recording up by ``call_session_id``. Redeliveries carry a
new timestamp and ``meta.attempt``, so deliveries are deduplicated on ``data.id``.

API (seeds ``003``/``004``): ``GET /recordings/{id}`` returns ``data.download_urls`` (presigned,
short-lived: fetched right before each download); ``GET /recordings`` pages with
``page[number]``/``page[size]`` and deepObject ``filter[...]``; items come flat (OpenAPI) or
wrapped as ``{"data": {...}}`` (rendered docs page): both are read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from providers.base import (
    Download,
    Provider,
    RecordingRef,
    WebhookEvent,
    WebhookRequest,
    optional_str,
    require_mapping,
)
from providers.errors import NotReadyYet, PayloadInvalid, RetryLater
from providers.json_body import parse_json_body
from providers.recording_callback import (
    FORM_CONTENT_TYPE,
    callback_event,
    decode_form,
    raise_reported_failure,
)
from providers.signing import check_timestamp, decode_b64, load_ed25519_key, verify_ed25519

__all__ = ["TelnyxProvider"]

CAPTURED_EVENTS = frozenset({"call.recording.saved"})
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}
PAGE_SIZE = 250
MAX_PAGES = 10_000  # a bound on every pagination loop; 2.5 M recordings per window


class TelnyxProvider(Provider):
    name = "telnyx"
    webhook_content_types = frozenset({"application/json", FORM_CONTENT_TYPE})
    credential_fields = ("api_key", "public_key")
    option_fields = ("format",)

    _verify_key: object | None = None

    # -- ingest ---------------------------------------------------------------------------------
    def verify(self, request: WebhookRequest) -> None:
        key = self._public_key()
        timestamp = check_timestamp(request.headers.get("telnyx-timestamp"), request.received_at)
        signature = decode_b64(request.headers.get("telnyx-signature-ed25519"), expected_len=64)
        verify_ed25519(key, f"{timestamp}|".encode() + request.body, signature)

    def _public_key(self) -> object:
        if self._verify_key is None:
            setting = self.account.sources.get("public_key", "telnyx public_key")
            self._verify_key = load_ed25519_key(self.account.secret("public_key"), setting)
        return self._verify_key

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        if request.content_type == FORM_CONTENT_TYPE:  # a TeXML recording status callback
            return callback_event(decode_form(request.body), delivery_prefix="texml:")
        document = require_mapping(parse_json_body(request.body), "body")
        data = require_mapping(document.get("data"), "data")
        event_type = optional_str(data.get("event_type"), "data.event_type")
        delivery_id = optional_str(data.get("id"), "data.id")
        if not event_type or not delivery_id:
            raise PayloadInvalid("data.event_type and data.id are required")
        if event_type not in CAPTURED_EVENTS:
            return WebhookEvent(delivery_id=delivery_id, event_type=event_type)
        payload = require_mapping(data.get("payload"), "data.payload")
        recording_id = optional_str(payload.get("recording_id"), "data.payload.recording_id")
        session = optional_str(payload.get("call_session_id"), "data.payload.call_session_id")
        if not recording_id and not session:
            raise PayloadInvalid("data.payload has neither recording_id nor call_session_id")
        hints = {
            key: payload[key]
            for key in (
                "call_leg_id",
                "call_control_id",
                "recording_started_at",
                "recording_ended_at",
                "channels",
            )
            if isinstance(payload.get(key), str) and len(payload[key]) <= 256
        }
        ref = RecordingRef(
            recording_id=recording_id,
            lookup=() if recording_id else (("call_session_id", session or ""),),
            call_id=session,
            hints=hints,
        )
        return WebhookEvent(delivery_id=delivery_id, event_type=event_type, recordings=(ref,))

    # -- worker ---------------------------------------------------------------------------------
    def _api_headers(self) -> dict[str, str]:
        return {
            "authorization": f"Bearer {self.account.secret('api_key')}",
            "accept": "application/json",
        }

    def fetch_recording(self, recording_id: str, hints: Mapping[str, Any]) -> Download:
        raise_reported_failure(hints, "Telnyx")  # a TeXML ``absent`` callback
        body = self.api(self._api_headers()).get_json(f"/recordings/{quote(recording_id, safe='')}")
        item = _unwrap(body)
        if item is None:
            raise RetryLater("API answered without a recording object")
        status = item.get("status")
        if status not in (None, "completed"):
            raise NotReadyYet(f"recording status is {str(status)[:32]!r}")
        fmt = self.account.options.get("format", "mp3")
        urls = item.get("download_urls")
        url = urls.get(fmt) if isinstance(urls, dict) else None
        if not isinstance(url, str) or not url:
            raise NotReadyYet(f"no {fmt} download URL yet")
        return Download(
            url=url,
            format=fmt,
            content_type=CONTENT_TYPES[fmt],
            metadata=_metadata(item),
        )

    def resolve(self, lookup: Mapping[str, str]) -> list[RecordingRef]:
        session = lookup.get("call_session_id")
        if not session:
            raise PayloadInvalid("a Telnyx lookup needs call_session_id")
        return [ref for page in self._pages({"filter[call_session_id]": session}) for ref in page]

    def list_pages(self, since: datetime, until: datetime) -> Iterator[list[RecordingRef]]:
        """Recordings created in ``[since, until]``, one list per API page (reconciliation)."""
        return self._pages(
            {
                "filter[created_at][gte]": since.isoformat().replace("+00:00", "Z"),
                "filter[created_at][lte]": until.isoformat().replace("+00:00", "Z"),
            }
        )

    def _pages(self, filters: Mapping[str, str]) -> Iterator[list[RecordingRef]]:
        api = self.api(self._api_headers())
        for number in range(1, MAX_PAGES + 1):
            body = api.get_json(
                "/recordings", {**filters, "page[number]": number, "page[size]": PAGE_SIZE}
            )
            items = body.get("data") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RetryLater("recordings list answered without a data array")
            page: list[RecordingRef] = []
            for raw in items:
                item = _unwrap({"data": raw})
                if item and isinstance(item.get("id"), str):
                    page.append(
                        RecordingRef(
                            recording_id=item["id"],
                            call_id=item.get("call_session_id"),
                            hints={
                                k: v
                                for k, v in _metadata(item).items()
                                if isinstance(v, str) and k not in ("from", "to")
                            },
                        )
                    )
            yield page
            meta = body.get("meta") if isinstance(body.get("meta"), dict) else {}
            total_pages = meta.get("total_pages")
            if not items or not isinstance(total_pages, int) or number >= total_pages:
                return
        raise RetryLater(f"recordings list has more than {MAX_PAGES} pages")

    def describe_error(self, response: httpx.Response) -> str:
        """``HTTP 429 10011 Too many requests`` from ``{"errors":[{code,title,detail}]}``."""
        try:
            first = response.json()["errors"][0]
            parts = [str(first.get(k, ""))[:120] for k in ("code", "title") if first.get(k)]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            parts = []
        return " ".join([f"HTTP {response.status_code}", *parts])


def _unwrap(body: Any) -> dict[str, Any] | None:
    """The recording object from ``{"data": {...}}`` or the docs page's doubly wrapped form."""
    item = body
    for _ in range(3):
        if isinstance(item, dict) and isinstance(item.get("data"), dict):
            item = item["data"]
        else:
            break
    return item if isinstance(item, dict) and item is not body else None


def _metadata(item: Mapping[str, Any]) -> dict[str, Any]:
    """Fields for the metadata record; download URLs are deliberately left out."""
    duration = item.get("duration_millis")
    channels = {"single": 1, "dual": 2}.get(str(item.get("channels")))
    record: dict[str, Any] = {
        "call_id": item.get("call_session_id"),
        "started_at": item.get("recording_started_at"),
        "ended_at": item.get("recording_ended_at"),
        "duration_seconds": duration / 1000 if isinstance(duration, int | float) else None,
        "channels": channels,
    }
    for key in (
        "call_leg_id",
        "call_control_id",
        "conference_id",
        "connection_id",
        "source",
        "initiated_by",
        "created_at",
        "from",
        "to",
    ):
        if item.get(key) is not None:
            record[key] = item[key]
    return record
