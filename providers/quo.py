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

Reconciliation (:meth:`QuoProvider.list_pages`) finds calls, not recordings: Quo has no
account-wide recordings list, and ``GET /v1/calls`` needs a line and one participant. So it
walks ``GET /v1/conversations`` (updated since the window began) → ``GET /v1/calls`` per
(line, participant) → one ``call.completed`` lookup per finished call; see that method.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
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
    CredentialsRefused,
    NothingToCapture,
    NotReadyYet,
    PayloadInvalid,
    PermanentFailure,
    RetryLater,
    SignatureInvalid,
)
from providers.http import ApiClient, retry_briefly
from providers.json_body import parse_json_body
from providers.ratelimit import Pacer
from providers.signing import (
    SIGNATURE_REASON,
    check_timestamp,
    check_timestamp_s_or_ms,
    decode_b64,
    load_b64_key,
    verify_hmac_sha256,
)

__all__ = ["QuoProvider"]

logger = logging.getLogger(__name__)

RECORDING_COMPLETED = "call.recording.completed"
CALL_COMPLETED = "call.completed"
CAPTURED_EVENTS = frozenset({RECORDING_COMPLETED, CALL_COMPLETED})
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
LEGACY_HEADER = "openphone-signature"
REQUESTS_PER_SECOND = 10  # "Each API key may make up to 10 requests per second" (rate-limits page)
# We pace at 9/s: requests spaced exactly 0.1 s apart reach Quo with jitter, and a listing's
# burst of back-to-back requests then counts 11 in some second (seen against the emulator).
PACED_PER_SECOND = 9

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

# -- reconciliation (list_pages) --
CONVERSATIONS_PATH = "/v1/conversations"
CALLS_PATH = "/v1/calls"
PAGE_SIZE = 100  # maxResults: the documented maximum, so a window costs the fewest requests
MAX_PAGES = 1_000  # bound on every page walk (100,000 conversations, or calls of one pair)
PAGE_ATTEMPTS = 4  # one page is retried this often within a walk (429, 5xx, network)
PAGE_RETRY_WAIT_SECONDS = 0.5  # doubled per attempt when Quo names no Retry-After
PAGE_RETRY_MAX_WAIT_SECONDS = 10.0  # a longer Retry-After ends the walk (the account pauses)
# Conversations updated this long before the window are listed too (see list_pages).
CONVERSATION_MARGIN = timedelta(minutes=15)
# Calls are asked for from this long before the window, so a call still live at one poll is
# found by the poll whose window holds its end (see list_pages).
LONG_CALL_LOOKBACK = timedelta(hours=6)
# Call statuses (OpenAPI enum): these are live; completed, busy, failed, no-answer, canceled,
# missed, forwarded, abandoned are final; ``answered`` and unknown ones count as final only
# with a ``completedAt``.
LIVE_CALL_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"})
FINAL_CALL_STATUSES = frozenset(
    {"completed", "busy", "failed", "no-answer", "canceled", "missed", "forwarded", "abandoned"}
)
# Phone numbers are query parameters of GET /v1/calls and may be echoed in Quo's errors; they
# never reach a log line, a hint or an error reason: E.164 (``+`` and 7 to 15 digits) and bare
# runs of 10 to 15 digits are masked.
_PHONE_RE = re.compile(r"\+\d[\d\s().-]{5,18}\d|(?<![\w-])\d{10,15}(?![\w-])")


class QuoProvider(Provider):
    name = "quo"
    webhook_content_types = frozenset({"application/json"})
    credential_fields = ("api_key", "signing_key", "webhook_secret")

    def __init__(
        self,
        account: Account,
        http: httpx.Client,
        *,
        page_size: int = PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(account, http)
        self._pacer = Pacer(PACED_PER_SECOND)
        self.page_size = page_size
        self._sleep = sleep

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
        # Judged against the time the request was received, as every other scheme is (the
        # library checks its own clock too): one clock for every provider's window.
        check_timestamp(headers["webhook-timestamp"], request.received_at)
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
        ref = _call_lookup(call_id, event_type, call)
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
            raise PermanentFailure(
                f"recording {recording_id} is not listed for its call", "not_found"
            )
        segment, item = found[0]
        status = item.get("status")
        if status in FINAL_STATUSES:
            raise PermanentFailure(f"recording status is {status!r} at Quo", "unavailable")
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

    def list_pages(self, since: datetime, until: datetime) -> Iterator[list[RecordingRef]]:
        """The finished calls of ``[since, until]``, one list per (line, participant).

        What Quo offers: no account-wide recordings or calls list. ``GET /v1/call-recordings/
        {callId}`` reads one call; ``GET /v1/calls`` needs a ``phoneNumberId`` and exactly one
        participant; only ``GET /v1/conversations`` needs no filter. So:

        1. ``GET /v1/conversations?updatedAfter=since - CONVERSATION_MARGIN`` (every page,
           ``maxResults=100``): each conversation names its line (``phoneNumberId``) and its
           participants. A call moves its conversation's activity, and ``updatedAt`` only grows,
           so a conversation with a call in the window was updated at or after that call.
           ``updatedBefore`` is *not* sent: any later activity (a message, another call) moves
           ``updatedAt`` past ``until`` and would hide the conversation. The margin covers a
           conversation stamped a little before its call's ``createdAt``/``completedAt`` (the
           two are written separately, possibly by different clocks). Conversations are listed
           newest activity first with page tokens, so one whose activity moves while we page
           can jump over the cursor: a second pass lists those updated since the walk began.
        2. For each distinct (line, participant), ``GET /v1/calls`` with ``createdAfter=since -
           LONG_CALL_LOOKBACK`` and ``createdBefore=until`` (+1 s; both are exclusive at Quo,
           UNCONFIRMED). A call belongs to the window when it was created or ended in it.
        3. Each *finished* call (a final status, or a ``completedAt``) becomes the lookup
           ``call_id=AC…&event=call.completed``: the very key a ``call.completed`` webhook
           makes, so a webhook and a poll of the same call share one lookup row (the later one
           inserts nothing and costs no API call); a ``call.recording.completed`` webhook makes
           another lookup, whose recordings dedupe on their ``CR…`` ids. The worker resolves the
           lookup into one row per segment, and a finished call listing no recording ends
           ``resolved`` with none (``NothingToCapture``) instead of retrying.
        4. Live calls are left to a later poll: the poll whose window holds their end finds
           them, through the lookback (calls up to ``LONG_CALL_LOOKBACK`` plus the reconciler's
           overlap long) and through the conversation activity their end causes (assumed,
           UNCONFIRMED: if only a call's start moved it, a call outlasting the overlap is found
           by a backfill of its window, or by its webhook).

        Cost: one request per conversation page, one per (line, participant) (more for pages of
        calls), paced under Quo's 10 requests/s per key; a conversation whose calls Quo refuses
        (a 4xx other than 401/403, e.g. a participant that is not E.164) is skipped with a
        warning rather than failing every poll of the account; a page failing with a short
        ``Retry-After`` (429) or a 5xx is retried in the walk, a longer wait is raised
        (``RateLimited``: the reconciler pauses the account). Phone numbers are sent as query
        parameters only; they are in no hint, log line or error reason. Calls of group
        conversations (several participants) are asked for per participant, which Quo's
        1:1-only filter may not list.
        """
        since, until = _checked_window(since, until)
        calls_after = _iso(since - LONG_CALL_LOOKBACK)
        calls_before = _iso(until + timedelta(seconds=1))
        api = self._api()
        seen: set[str] = set()
        skipped = refused = 0
        for line, participant in self._pairs(api, since - CONVERSATION_MARGIN):
            params = {
                "phoneNumberId": line,
                "participants": participant,
                "createdAfter": calls_after,
                "createdBefore": calls_before,
            }
            try:
                calls = list(self._walk(api, CALLS_PATH, params, "calls"))
            except CredentialsRefused:
                raise
            except PermanentFailure as exc:  # one refused pair must not stop every poll
                refused += 1
                logger.warning("Quo refused the calls of one conversation: %s", exc.reason)
                continue
            page: list[RecordingRef] = []
            for call in calls:
                call_id = call.get("id")
                if not isinstance(call_id, str) or not CALL_ID_RE.fullmatch(call_id):
                    skipped += 1
                elif call_id not in seen and _finished_in(call, since, until):
                    seen.add(call_id)
                    page.append(_call_lookup(call_id, CALL_COMPLETED, call))
            if page:
                yield page
        if skipped or refused:
            logger.warning(
                "Quo listing: %d call(s) without a valid call id, %d conversation(s) refused",
                skipped,
                refused,
            )

    def _pairs(self, api: ApiClient, updated_after: datetime) -> list[tuple[str, str]]:
        """Distinct (line, participant) of the conversations updated after ``updated_after``,
        then of those updated since this walk began (they may have jumped the cursor)."""
        began = datetime.now(UTC)
        pairs: dict[tuple[str, str], None] = {}
        passes = [updated_after] + ([began - CONVERSATION_MARGIN] if began > updated_after else [])
        for after in passes:
            params = {"updatedAfter": _iso(after)}
            for conversation in self._walk(api, CONVERSATIONS_PATH, params, "conversations"):
                line = conversation.get("phoneNumberId")
                participants = conversation.get("participants")
                if not isinstance(line, str) or not line or not isinstance(participants, list):
                    continue
                for participant in participants:
                    if isinstance(participant, str) and participant:
                        pairs[(line, participant)] = None
        return list(pairs)

    def _walk(
        self, api: ApiClient, path: str, params: Mapping[str, str], what: str
    ) -> Iterator[Mapping[str, Any]]:
        """Every item of every page (``pageToken`` → ``nextPageToken``), at most MAX_PAGES."""
        token: str | None = None
        for number in range(1, MAX_PAGES + 1):
            query = {**params, "maxResults": str(self.page_size)}
            if token:
                query["pageToken"] = token
            body = retry_briefly(
                functools.partial(self._get, api, path, query),
                f"Quo {what} page {number}",
                attempts=PAGE_ATTEMPTS,
                base_wait=PAGE_RETRY_WAIT_SECONDS,
                max_wait=PAGE_RETRY_MAX_WAIT_SECONDS,
                sleep=self._sleep,
                account=(self.account.provider, self.account.name),
            )
            items = body.get("data") if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise RetryLater(f"Quo {what} answered without a data array")
            yield from (item for item in items if isinstance(item, dict))
            token = body.get("nextPageToken")
            if not items or not isinstance(token, str) or not token:
                return
        raise RetryLater(f"Quo lists more than {MAX_PAGES} pages of {what}")

    def _get(self, api: ApiClient, path: str, params: Mapping[str, str] | None = None) -> Any:
        self._pacer.wait()
        return api.get_json(path, params)

    def _api(self) -> ApiClient:
        headers = {"authorization": self.account.secret("api_key"), "accept": "application/json"}
        return self.api(headers)

    def _call_recordings(self, call_id: str) -> list[dict[str, Any]]:
        """The call's recordings, oldest segment first, each with a string ``id``."""
        body = self._get(self._api(), f"/v1/call-recordings/{quote(call_id, safe='')}")
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
        return _PHONE_RE.sub("+…", text)


def _call_object(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The call from ``data.object`` (legacy) or ``data.resource`` (2026-03-30 API)."""
    for key in ("object", "resource"):
        if data.get(key) is not None:
            return require_mapping(data[key], f"data.{key}")
    raise PayloadInvalid("data.object or data.resource is required")


def _call_lookup(call_id: str, event_type: str, call: Mapping[str, Any]) -> RecordingRef:
    """The lookup row of a call; its hints are a few short timestamps and states (never the
    call's phone numbers)."""
    hints = {
        key: call[key]
        for key in _HINT_FIELDS
        if isinstance(call.get(key), str) and len(call[key]) <= 64
    }
    return RecordingRef(
        recording_id=None,
        lookup=(("call_id", call_id), ("event", event_type)),
        call_id=call_id,
        hints=hints,
    )


def _checked_window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    if until < since:
        raise ValueError("until is before since")
    return since.astimezone(UTC), until.astimezone(UTC)


def _iso(moment: datetime) -> str:
    """``2024-01-16T10:30:00.123Z`` (milliseconds, truncated)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def _finished_in(call: Mapping[str, Any], since: datetime, until: datetime) -> bool:
    """Whether the call is over and was created or ended within ``[since, until]``."""
    created, ended = _time(call.get("createdAt")), _time(call.get("completedAt"))
    status = call.get("status")
    if status in LIVE_CALL_STATUSES or (status not in FINAL_CALL_STATUSES and ended is None):
        return False  # live: the poll whose window holds its end lists it
    if created is None or created > until:
        return False
    return created >= since or (ended is not None and ended >= since)


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
