"""Twilio: the signed recording status callback and the 2010-04-01 Recordings API.

Callback (providers.md §5.1): form-urlencoded ``RecordingSid``/``RecordingStatus``/…, decoded
and mapped by ``providers.recording_callback`` (shared with Telnyx TeXML, which is Twilio-shaped
but signed with Telnyx's Ed25519 key and fetched from Telnyx's API, so it is read on
``/webhooks/telnyx``: see ``providers/telnyx.py``).

Signature (§5.2, https://www.twilio.com/docs/usage/webhooks/webhooks-security):
``X-Twilio-Signature`` = base64 HMAC-SHA1(auth token, public URL + sorted params), checked for
the URL with and without its port as twilio-python's ``RequestValidator`` does. The URL is the
one Twilio called: ``WebhookRequest.url``, rebuilt from ``CALLREC_PUBLIC_BASE_URL`` or, behind
trusted proxies, from ``X-Forwarded-*`` (``CALLREC_TRUST_PROXY_HOPS``). A URL carrying
``bodySHA256`` is Twilio's JSON-body scheme: the URL alone is signed and the body's sha256 must
match (Twilio never sends recording callbacks that way; such a request then gets its 415).
Twilio has no timestamp, so there is no replay window; deliveries dedupe on RecordingSid+status.

API (§5.4, §5.5): HTTP Basic (Account SID, auth token) on every call, media included.
``GET /2010-04-01/Accounts/{AC}/Recordings/{RE}.json`` for the status and metadata; the audio is
the same path with ``.wav`` or ``.mp3`` (``CALLREC_TWILIO_FORMAT``; encrypted recordings only
exist as wav, error 16109). The media URL is built on ``CALLREC_TWILIO_API_BASE``, so the
credentials only ever go to the configured API host (workers/download.py keeps them across a
redirect only on that host). Errors are ``{"code", "message", "more_info", "status"}``; 429 is
error 20429, "always safe to retry" (workers honour its ``Retry-After``).
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from hashlib import sha256
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from providers.base import Download, Provider, RecordingRef, WebhookEvent, WebhookRequest
from providers.errors import (
    NotReadyYet,
    PayloadInvalid,
    PermanentFailure,
    RetryLater,
    SignatureInvalid,
)
from providers.recording_callback import (
    FORM_CONTENT_TYPE,
    callback_event,
    decode_form,
    raise_reported_failure,
    signed_params,
)
from providers.signing import SIGNATURE_REASON, verify_twilio_signature

__all__ = ["TwilioProvider"]

API_VERSION = "/2010-04-01"
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
RECORDING_SID = re.compile(r"RE[0-9a-fA-F]{32}")
NOT_READY = frozenset({"in-progress", "paused", "stopped", "processing"})
GONE = frozenset({"absent", "failed", "deleted"})
PAGE_SIZE = 1000  # the API's maximum page size
MAX_PAGES = 10_000  # a bound on the paging loop


class TwilioProvider(Provider):
    name = "twilio"
    webhook_content_types = frozenset({FORM_CONTENT_TYPE})
    credential_fields = ("account_sid", "auth_token")
    option_fields = ("format",)

    # -- ingest ---------------------------------------------------------------------------------
    def verify(self, request: WebhookRequest) -> None:
        token = self.account.secret("auth_token")
        query = parse_qs(urlsplit(request.url).query)
        if "bodySHA256" in query:
            body_hash = sha256(request.body).hexdigest().encode()
            if not hmac.compare_digest(body_hash, query["bodySHA256"][0].encode()):
                raise SignatureInvalid(SIGNATURE_REASON)
            params: list[tuple[str, str]] = []
        else:
            params = signed_params(request.body)
        verify_twilio_signature(
            token, request.url, params, request.headers.get("x-twilio-signature")
        )

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        form = decode_form(request.body)
        for name, pattern in (("AccountSid", ACCOUNT_SID), ("RecordingSid", RECORDING_SID)):
            if not pattern.fullmatch(form.get(name, "")):
                raise PayloadInvalid(f"{name} must be a Twilio SID ({pattern.pattern})")
        return callback_event(form)

    # -- worker ---------------------------------------------------------------------------------
    def _auth(self) -> tuple[str, str]:
        return self.account.secret("account_sid"), self.account.secret("auth_token")

    def _api_headers(self) -> dict[str, str]:
        token = base64.b64encode(":".join(self._auth()).encode()).decode()
        return {"authorization": f"Basic {token}", "accept": "application/json"}

    def _recording_path(self, account_sid: str, recording_sid: str) -> str:
        return (
            f"{API_VERSION}/Accounts/{quote(account_sid, safe='')}"
            f"/Recordings/{quote(recording_sid, safe='')}"
        )

    def fetch_recording(self, recording_id: str, hints: Mapping[str, Any]) -> Download:
        raise_reported_failure(hints, "Twilio")
        # A subaccount's recording lives under its own AccountSid; the main account's
        # credentials may read it.
        account_sid = str(hints.get("account_sid") or self._auth()[0])
        path = self._recording_path(account_sid, recording_id)
        item = self.api(self._api_headers()).get_json(f"{path}.json")
        if not isinstance(item, dict):
            raise RetryLater("API answered without a recording object")
        status = str(item.get("status") or "")
        if status in GONE:
            code = item.get("error_code") or "none given"
            raise PermanentFailure(
                f"Twilio recording is {status} (ErrorCode {code})", "unavailable"
            )
        if status in NOT_READY:
            raise NotReadyYet(f"recording status is {status[:32]!r}")
        if status != "completed":
            raise RetryLater(f"unknown recording status {status[:32]!r}")
        fmt = self.account.options.get("format", "wav")
        if item.get("encryption_details") and fmt != "wav":
            fmt = "wav"  # encrypted recordings cannot be fetched as mp3 (error 16109)
        return Download(
            url=f"{self.account.api_base.rstrip('/')}{path}.{fmt}",
            format=fmt,
            content_type=CONTENT_TYPES[fmt],
            auth=self._auth(),
            metadata=_metadata(item),
        )

    def resolve(self, lookup: Mapping[str, str]) -> list[RecordingRef]:
        """A call's recordings (``{"call_sid": CA…}``); Twilio callbacks always name the
        recording, so only an operator or a future poller asks this."""
        call_sid = lookup.get("call_sid")
        if not call_sid:
            raise PayloadInvalid("a Twilio lookup needs call_sid")
        return [ref for page in self._pages({"CallSid": call_sid}) for ref in page]

    def list_pages(self, since: datetime, until: datetime) -> Iterator[list[RecordingRef]]:
        """Recordings created in ``[since, until]``: ``DateCreated>=``/``DateCreated<=`` (the
        query names are ``DateCreated>``/``DateCreated<``, as twilio-python sends them), one
        list per API page."""
        return self._pages(
            {
                "DateCreated>": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "DateCreated<": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def _pages(self, filters: Mapping[str, str]) -> Iterator[list[RecordingRef]]:
        api = self.api(self._api_headers())
        prefix = f"{API_VERSION}/Accounts/{quote(self._auth()[0], safe='')}/Recordings"
        body = api.get_json(f"{prefix}.json", {**filters, "PageSize": PAGE_SIZE})
        for _page in range(MAX_PAGES):
            items = body.get("recordings") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RetryLater("recordings list answered without a recordings array")
            yield [
                _ref(item)
                for item in items
                if isinstance(item, dict) and RECORDING_SID.fullmatch(str(item.get("sid")))
            ]
            next_uri = body.get("next_page_uri")
            if not next_uri or not items:
                return
            if not isinstance(next_uri, str) or not next_uri.startswith(f"{prefix}.json?"):
                raise RetryLater("recordings list answered with an unexpected next_page_uri")
            body = api.get_json(next_uri)
        raise RetryLater(f"recordings list has more than {MAX_PAGES} pages")

    def describe_error(self, response: httpx.Response) -> str:
        """``HTTP 429 Twilio error 20429: Too Many Requests (https://…/20429)``."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "code" not in body:
            return f"HTTP {response.status_code}"
        reason = f"HTTP {response.status_code} Twilio error {str(body['code'])[:12]}"
        if body.get("message"):
            reason += f": {str(body['message'])[:160]}"
        if isinstance(body.get("more_info"), str):
            reason += f" ({body['more_info'][:120]})"
        return reason


def _ref(item: Mapping[str, Any]) -> RecordingRef:
    hints = {
        key: str(item[field])
        for field, key in (("account_sid", "account_sid"), ("status", "status"))
        if item.get(field)
    }
    if hints.get("status") not in GONE:
        hints.pop("status", None)  # only a final failure short-cuts the capture
    if item.get("error_code"):
        hints["error_code"] = str(item["error_code"])
    return RecordingRef(recording_id=str(item["sid"]), call_id=item.get("call_sid"), hints=hints)


def _rfc2822(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _metadata(item: Mapping[str, Any]) -> dict[str, Any]:
    """Fields for the metadata record (times as ISO 8601); URLs and prices are left out."""
    started = _rfc2822(item.get("start_time"))
    try:
        duration: int | None = int(item.get("duration"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        duration = None
    ended = started + timedelta(seconds=duration) if started and duration is not None else None
    channels = item.get("channels")
    record: dict[str, Any] = {
        "call_id": item.get("call_sid"),
        "started_at": started.isoformat() if started else None,
        "ended_at": ended.isoformat() if ended else None,
        "duration_seconds": duration,
        "channels": channels if isinstance(channels, int) else None,
        "encrypted": bool(item.get("encryption_details")),
    }
    for key in ("account_sid", "conference_sid", "source", "track", "date_created"):
        if item.get(key) is not None:
            record[key] = item[key]
    return record
