"""Quo (formerly OpenPhone): call webhooks under both signature systems, and the recordings API.

Webhooks (providers.md §2; https://www.quo.com/docs/webhooks/legacy-signature-validation,
https://www.quo.com/docs/mdx/beta/webhooks-signature-validation):

* legacy — ``openphone-signature: hmac;1;<timestamp>;<base64 sig>``, HMAC-SHA256 over
  ``f"{timestamp}.{raw body}"`` keyed with the base64-decoded signing key. Quo states no
  tolerance, so we enforce 5 minutes each way (a public audit found a verifier without one
  accepting week-old replays). The timestamp unit is not stated either: Quo's only example,
  ``1639710054089``, has 13 digits, i.e. milliseconds (it reads as 2021-12-17 in ms and as the
  year 53916 in seconds), so 13 digits are ms and 10 digits seconds; anything else is refused;
* Standard Webhooks — ``webhook-id``/``webhook-timestamp``/``webhook-signature`` with a
  ``whsec_`` secret, verified by the ``standardwebhooks`` library (5-minute tolerance, any of the
  space-separated ``v1,`` signatures passes, constant-time compare).

The call sits at ``data.object`` (legacy) or ``data.resource`` (2026-03-30 API); both are read
under either scheme. Deliveries are deduplicated on ``webhook-id`` (Standard Webhooks: "Use as
your idempotency key") or, for legacy webhooks, on the event ``id`` (``EV…``).

Webhooks name the call (``AC…``), never a recording id, so each becomes a *lookup* row that the
worker resolves with ``GET /v1/call-recordings/{callId}`` (seed ``002``): one recording per
paused/resumed segment, oldest first, each its own row with ``segment`` 1, 2, … in its record.
``call.recording.completed`` promises a recording, so an empty list means "not listed yet" and
is retried; after ``call.completed`` an empty list is final (the call was not recorded).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from standardwebhooks import Webhook, WebhookVerificationError

from providers.base import (
    Account,
    Download,
    Provider,
    RecordingRef,
    WebhookEvent,
    WebhookRequest,
    optional_str,
    require_mapping,
)
from providers.errors import (
    ConfigurationMissing,
    NothingToCapture,
    NotReadyYet,
    PayloadInvalid,
    PermanentFailure,
    RetryLater,
    SignatureInvalid,
)
from providers.json_body import parse_json_body
from providers.ratelimit import Pacer
from providers.signing import (
    SIGNATURE_REASON,
    check_timestamp_s_or_ms,
    decode_b64,
    load_b64_key,
    verify_hmac_sha256,
)

__all__ = ["QuoProvider"]

RECORDING_COMPLETED = "call.recording.completed"
CALL_COMPLETED = "call.completed"
CAPTURED_EVENTS = frozenset({RECORDING_COMPLETED, CALL_COMPLETED})
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
LEGACY_HEADER = "openphone-signature"
REQUESTS_PER_SECOND = 10  # "Each API key may make up to 10 requests per second" (rate-limits page)

# Recording statuses of the OpenAPI enum (seed 002). ``stopped`` is not described anywhere; it
# sits between ``stopping`` and ``processing`` in a recording's life, so it is waited out too.
NOT_READY_STATUSES = frozenset({"in-progress", "processing", "stopping", "stopped", "paused"})
FINAL_STATUSES = frozenset({"absent", "failed", "deleted"})
FORMATS = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/ogg": "ogg",
    "audio/webm": "webm",
}
CALL_ID_RE = re.compile(r"AC[A-Za-z0-9]{1,64}")
_HINT_FIELDS = ("direction", "status", "createdAt", "answeredAt", "completedAt")


class QuoProvider(Provider):
    name = "quo"
    webhook_content_types = frozenset({"application/json"})
    credential_fields = ("api_key", "signing_key", "webhook_secret")

    def __init__(self, account: Account, http: httpx.Client) -> None:
        super().__init__(account, http)
        self._pacer = Pacer(REQUESTS_PER_SECOND)

    # -- ingest: signatures ---------------------------------------------------------------------
    def verify(self, request: WebhookRequest) -> None:
        headers = request.headers
        if any(headers.get(name) is not None for name in STANDARD_HEADERS):
            self._verify_standard(request)
        elif headers.get(LEGACY_HEADER) is not None:
            self._verify_legacy(request)
        elif not (
            self.account.credentials.get("signing_key")
            or self.account.credentials.get("webhook_secret")
        ):
            sources = [self.account.sources.get(f, f) for f in ("signing_key", "webhook_secret")]
            raise ConfigurationMissing(f"neither {' nor '.join(sources)} is set")
        else:
            raise SignatureInvalid(SIGNATURE_REASON)

    def _verify_legacy(self, request: WebhookRequest) -> None:
        key = self._legacy_key
        fields = (request.headers.get(LEGACY_HEADER) or "").strip().split(";")
        if len(fields) != 4 or fields[0] != "hmac" or fields[1] != "1":
            raise SignatureInvalid(SIGNATURE_REASON)
        timestamp, signature = fields[2], decode_b64(fields[3], expected_len=32)
        check_timestamp_s_or_ms(timestamp, request.received_at)
        verify_hmac_sha256(key, timestamp.encode() + b"." + request.body, signature)

    def _verify_standard(self, request: WebhookRequest) -> None:
        webhook = self._webhook
        headers = {name: request.headers.get(name) or "" for name in STANDARD_HEADERS}
        try:
            webhook.verify(request.body, headers, json_parse=False)
        # ValueError: the library decodes the body as UTF-8 and splits each "v1,<sig>" itself.
        except (WebhookVerificationError, ValueError):
            raise SignatureInvalid(SIGNATURE_REASON) from None

    @functools.cached_property
    def _legacy_key(self) -> bytes:
        return load_b64_key(self.account.secret("signing_key"), self._source("signing_key"))

    @functools.cached_property
    def _webhook(self) -> Webhook:
        secret = self.account.secret("webhook_secret").strip()
        setting = self._source("webhook_secret")
        # The library decodes leniently (drops non-base64 characters); check strictly first.
        body = secret.removeprefix("whsec_")
        load_b64_key(body + "=" * (-len(body) % 4), setting)
        return Webhook(secret)

    def _source(self, field: str) -> str:
        return self.account.sources.get(field, f"quo {field}")

    # -- ingest: payloads -----------------------------------------------------------------------
    def parse(self, request: WebhookRequest) -> WebhookEvent:
        document = require_mapping(parse_json_body(request.body), "body")
        event_type = optional_str(document.get("type"), "type")
        event_id = optional_str(document.get("id"), "id")
        delivery_id = optional_str(request.headers.get("webhook-id"), "webhook-id") or event_id
        if not event_type or not delivery_id:
            raise PayloadInvalid("type and id (or a webhook-id header) are required")
        if event_type not in CAPTURED_EVENTS:
            return WebhookEvent(delivery_id=delivery_id, event_type=event_type)
        call = _call_object(require_mapping(document.get("data"), "data"))
        call_id = optional_str(call.get("id"), "call id")
        if not call_id or not CALL_ID_RE.fullmatch(call_id):
            raise PayloadInvalid("the call id must match ^AC[A-Za-z0-9]+$")
        hints = {
            key: call[key]
            for key in _HINT_FIELDS
            if isinstance(call.get(key), str) and len(call[key]) <= 64
        }
        ref = RecordingRef(
            recording_id=None,
            lookup=(("call_id", call_id), ("event", event_type)),
            call_id=call_id,
            hints=hints,
        )
        return WebhookEvent(delivery_id=delivery_id, event_type=event_type, recordings=(ref,))

    # -- worker ---------------------------------------------------------------------------------
    def resolve(self, lookup: Mapping[str, str]) -> list[RecordingRef]:
        call_id = _checked_call_id(lookup.get("call_id"))
        items = self._call_recordings(call_id)
        if not items and lookup.get("event") == CALL_COMPLETED:
            raise NothingToCapture("the call ended without recordings")
        return [
            RecordingRef(
                recording_id=item["id"],
                call_id=call_id,
                hints={"call_id": call_id, "segment": segment},
            )
            for segment, item in enumerate(items, start=1)
        ]

    def fetch_recording(self, recording_id: str, hints: Mapping[str, Any]) -> Download:
        call_id = _checked_call_id(hints.get("call_id"))
        items = self._call_recordings(call_id)
        found = [(n, item) for n, item in enumerate(items, start=1) if item["id"] == recording_id]
        if not found:
            raise PermanentFailure(f"recording {recording_id} is not listed for its call")
        segment, item = found[0]
        status = item.get("status")
        if status in FINAL_STATUSES:
            raise PermanentFailure(f"recording status is {status!r} at Quo")
        if status != "completed":
            raise NotReadyYet(f"recording status is {str(status)[:32]!r}")
        url = item.get("url")
        if not isinstance(url, str) or not url:
            raise NotReadyYet("recording is completed but has no url yet")
        content_type = item.get("type") if isinstance(item.get("type"), str) else None
        fmt = _format(content_type, url)
        return Download(
            url=url,
            format=fmt,
            content_type=content_type or _content_type(fmt),
            metadata=_metadata(item, call_id, segment),
        )

    def list_recordings(self, since: datetime, until: datetime) -> Iterator[RecordingRef]:
        """Not offered by Quo: recordings are listed per call only.

        The API reads recordings one call at a time (``GET /v1/call-recordings/{callId}``, seed
        ``002``; ``GET /calls/{callId}/recordings`` in 2026-03-30) and has no account-wide
        recording list with a time window. Its call list, ``GET /v1/calls``, requires a
        ``phoneNumberId`` *and* exactly one participant number ("Currently limited to one-to-one
        (1:1) conversations only", https://www.quo.com/docs/mdx/api-reference/calls/list-calls),
        so it cannot enumerate a workspace's calls either. The only complete path is a chain:
        ``GET /v1/conversations?updatedAfter=…`` (every conversation of the workspace) → for
        each 1:1 conversation ``GET /v1/calls?phoneNumberId&participants&createdAfter&
        createdBefore`` → for each call ``GET /v1/call-recordings/{callId}``: one request per
        conversation and per call at 10 requests/s per key, whether a conversation's
        ``updatedAt`` moves with a call is not documented (UNCONFIRMED), and calls of group
        conversations stay out of reach. Not built: the reconciler records "no list API" for
        Quo accounts and captures come from the webhooks. Raised rather than faking an empty
        list.
        """
        raise NotImplementedError(
            "Quo has no account-wide recordings list: recordings are read per call "
            "(GET /v1/call-recordings/{callId}); capture relies on its call webhooks"
        )

    def _call_recordings(self, call_id: str) -> list[dict[str, Any]]:
        """The call's recordings, oldest segment first, each with a string ``id``."""
        headers = {"authorization": self.account.secret("api_key"), "accept": "application/json"}
        self._pacer.wait()
        body = self.api(headers).get_json(f"/v1/call-recordings/{quote(call_id, safe='')}")
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise RetryLater("call recordings answered without a data array")
        recordings = [
            item
            for item in items
            if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]
        ]
        if len(recordings) != len(items):
            raise RetryLater("call recordings answered an item without an id")
        return recordings

    def describe_error(self, response: httpx.Response) -> str:
        """``HTTP 404 0900404 Not Found: Call not found (trace …)`` from Quo's error body."""
        parts = [f"HTTP {response.status_code}"]
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return parts[0]
        for key in ("code", "title"):
            if isinstance(body.get(key), str | int) and str(body[key]):
                parts.append(str(body[key])[:80])
        text = " ".join(parts)
        details = [str(body["message"])[:200]] if isinstance(body.get("message"), str) else []
        errors = body.get("errors")
        if isinstance(errors, list):
            details += [
                f"{str(e.get('path', ''))[:60]}: {str(e.get('message', ''))[:120]}"
                for e in errors[:3]
                if isinstance(e, dict)
            ]
        if details:
            text += ": " + "; ".join(details)
        if isinstance(body.get("trace"), str) and body["trace"]:
            text += f" (trace {body['trace'][:64]})"
        return text


def _call_object(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The call from ``data.object`` (legacy) or ``data.resource`` (2026-03-30 API)."""
    for key in ("object", "resource"):
        if data.get(key) is not None:
            return require_mapping(data[key], f"data.{key}")
    raise PayloadInvalid("data.object or data.resource is required")


def _checked_call_id(value: Any) -> str:
    if not isinstance(value, str) or not CALL_ID_RE.fullmatch(value):
        raise PermanentFailure("a Quo row needs the call id (AC…) it belongs to")
    return value


def _format(content_type: str | None, url: str) -> str:
    """Storage extension from the recording's ``type``, else the URL's, else ``mp3``."""
    if content_type and content_type.lower() in FORMATS:
        return FORMATS[content_type.lower()]
    extension = urlsplit(url).path.rpartition(".")[2].lower()
    return extension if extension in FORMATS.values() else "mp3"


def _content_type(fmt: str) -> str:
    return next(ct for ct, ext in FORMATS.items() if ext == fmt)


def _metadata(item: Mapping[str, Any], call_id: str, segment: int) -> dict[str, Any]:
    """Fields for the metadata record (the URL is deliberately left out)."""
    started = item.get("startTime") if isinstance(item.get("startTime"), str) else None
    duration = item.get("duration") if isinstance(item.get("duration"), int | float) else None
    ended = None
    if started and duration is not None:
        try:
            start = datetime.fromisoformat(started.replace("Z", "+00:00"))
            ended = (start + timedelta(seconds=duration)).isoformat().replace("+00:00", "Z")
        except ValueError:
            ended = None
    return {
        "call_id": call_id,
        "segment": segment,
        "started_at": started,
        "ended_at": ended,
        "duration_seconds": duration,
        "status": item.get("status"),
    }
