"""A real HTTP emulator of Quo's (OpenPhone's) call recordings API, and a webhook sender.

What it serves (one loopback port; seed ``002`` and providers.md §2):

- ``GET /v1/call-recordings/{callId}`` — ``{"data": [...]}``, the call's recordings oldest
  segment first, each ``{id, status, startTime, duration, type, url}``; ``url`` and
  ``duration`` are null until the recording is ``completed``. ``Authorization: <api key>``
  exactly (no Bearer: "The Quo API does not use a Bearer token"), else 401. A call id not
  matching ``^AC(.*)$`` is a 400 with ``errors[]``; an unknown call a 404 "Call not found".
  Error bodies follow the OpenAPI: ``{message, code, status, docs, title, trace}``.
- ``GET /v1/conversations`` — every conversation, most recent activity first; ``maxResults``
  (1 to 100, default 10), ``pageToken`` → ``nextPageToken``, ``totalItems``; filters
  ``phoneNumbers[]`` (``PN…`` ids only: the emulator knows no E.164 number of its own lines),
  ``userId``, ``createdAfter``/``createdBefore``, ``updatedAfter``/``updatedBefore`` (ISO 8601,
  both bounds exclusive), ``excludeInactive`` (accepted; every conversation here is active).
  Conversations are derived from the calls held: one per (phone number id, participant), created
  at its first call, its ``updatedAt``/``lastActivityAt`` the latest start or end of its calls
  or of an activity added with :meth:`QuoEmulator.add_activity` (a message, say). That a call's
  end moves its conversation's activity is this emulator's assumption (UNCONFIRMED at Quo).
- ``GET /v1/calls`` — ``phoneNumberId`` and ``participants`` (exactly one) are required, else a
  400 validation error ``{message, docs, title, errors: [{path, message, value, schema}]}``
  (the participant must be E.164; ``value`` echoes what was sent, numbers included);
  ``userId``, ``createdAfter``/``createdBefore`` (exclusive), ``maxResults`` (1 to 100, default
  10), ``pageToken`` → ``nextPageToken``, ``totalItems``; newest first. Page tokens are opaque
  and bound to their query (another query with it is a 400).
- Rate limit: "Each API key may make up to 10 requests per second" — enforced per key over a
  sliding second: the 11th gets 429 with ``Retry-After: 1``. Quo documents neither the 429 body
  nor its headers (UNCONFIRMED); the body here follows the other error bodies.
- ``GET|HEAD /media/{recordingId}.mp3?X-Amz-...`` — expiring presigned audio with Range
  (:mod:`emulators.media`). Real Quo URLs show no signature and their lifetime is not stated
  (§2.4); expiring ones are the stricter case for callrec.

Faults: :meth:`Emulator.inject` (``"api"``, ``"audio"``). Webhooks: :class:`QuoWebhookSender`
signs legacy ``openphone-signature`` and Standard Webhooks (with the ``standardwebhooks``
library) deliveries and posts them.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from standardwebhooks import Webhook
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request, Response

from emulators.audio import MP3_PREFIX, AudioSource
from emulators.base import Emulator
from emulators.base import json_response as _json
from emulators.media import MediaFile, PresignedMedia, iso_ms
from emulators.numbers import QUO_LINE, QUO_PARTICIPANT

__all__ = [
    "CALL_STATUSES",
    "STATUSES",
    "QuoCall",
    "QuoEmulator",
    "QuoRecording",
    "QuoWebhookSender",
    "call_event_body",
]

# The recording status enum of the OpenAPI (seed 002).
STATUSES = frozenset(
    {
        "absent",
        "completed",
        "deleted",
        "failed",
        "in-progress",
        "paused",
        "processing",
        "stopped",
        "stopping",
    }
)
_CALL_RE = re.compile(r"/v1/call-recordings/([^/]*)")
# Call statuses of the OpenAPI; a call in one of LIVE_STATUSES has no ``completedAt`` yet.
CALL_STATUSES = frozenset(
    {
        "queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed",
        "no-answer", "canceled", "missed", "answered", "forwarded", "abandoned",
    }
)  # fmt: skip
LIVE_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"})
MAX_RESULTS = 100
_E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
DOCS = "https://openphone.com/docs"


def error_body(status: int, title: str, message: str, **extra: Any) -> dict[str, Any]:
    """An error body as the OpenAPI draws it (code ``09004xx``, ``0901500`` for 500)."""
    code = "0901500" if status == 500 else f"0900{status}"
    return {
        "message": message,
        "code": code,
        "status": status,
        "docs": DOCS,
        "title": title,
        "trace": secrets.token_hex(8),
        **extra,
    }


def _new_id(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(_ID_CHARS) for _ in range(length))


@dataclass
class QuoRecording:
    """One recording segment of a call."""

    id: str
    call_id: str
    status: str
    start_time: datetime
    duration: int
    size: int
    seed: str
    _audio: AudioSource | None = field(default=None, repr=False, compare=False)

    def audio(self) -> AudioSource:
        """The mp3 bytes served for this recording (``size`` bytes, ID3 header first)."""
        if self._audio is None:
            self._audio = AudioSource(self.size, f"{self.seed}:mp3", prefix=MP3_PREFIX)
        return self._audio

    def item(self, url: str | None) -> dict[str, Any]:
        """The API item; ``url`` and ``duration`` only once completed."""
        done = self.status == "completed"
        return {
            "duration": self.duration if done else None,
            "id": self.id,
            "startTime": iso_ms(self.start_time).replace(".000Z", "Z"),
            "status": self.status,
            "type": "audio/mpeg",
            "url": url if done else None,
        }


@dataclass
class QuoCall:
    """A call between one of our lines (``phone_number_id``) and one ``participant``, and its
    recordings, oldest segment first. ``completed_at`` is None while the call is live."""

    id: str
    created_at: datetime
    completed_at: datetime | None
    recordings: list[QuoRecording] = field(default_factory=list)
    direction: str = "incoming"
    status: str = "completed"
    phone_number_id: str = "PNtoDbDhuz"
    participant: str = QUO_PARTICIPANT
    user_id: str = "USu5AsEHuQ"

    def item(self) -> dict[str, Any]:
        """The ``GET /v1/calls`` item."""
        ended = self.completed_at
        return {
            "answeredAt": iso_ms(self.created_at + timedelta(seconds=4)),
            "answeredBy": self.user_id,
            "initiatedBy": None,
            "direction": self.direction,
            "status": self.status,
            "completedAt": iso_ms(ended) if ended else None,
            "createdAt": iso_ms(self.created_at),
            "duration": int((ended - self.created_at).total_seconds()) if ended else 0,
            "forwardedFrom": None,
            "forwardedTo": None,
            "id": self.id,
            "phoneNumberId": self.phone_number_id,
            "participants": [self.participant],
            "updatedAt": iso_ms(ended or self.created_at),
            "userId": self.user_id,
        }

    @property
    def activity(self) -> datetime:
        """When the call last moved its conversation's activity (its end, else its start)."""
        return self.completed_at or self.created_at


class QuoEmulator(Emulator):
    """Quo's call recordings API and expiring audio URLs on one loopback port."""

    def __init__(
        self,
        api_key: str = "test-quo-key",
        url_ttl_seconds: float = 600.0,
        rate_limit: int | None = 10,
        *,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.url_ttl_seconds = url_ttl_seconds
        self.rate_limit = rate_limit
        self._media = PresignedMedia()
        self._calls: dict[str, QuoCall] = {}
        self._recordings: dict[str, QuoRecording] = {}
        self._recent: dict[str, collections.deque[float]] = {}
        self._activity: dict[tuple[str, str], datetime] = {}

    @property
    def base_url(self) -> str:
        """The API base (``CALLREC_QUO_API_BASE``): the server root."""
        return self.url

    def settings_env(self, sender: QuoWebhookSender | None = None) -> dict[str, str]:
        """The ``CALLREC_QUO_*`` settings that point callrec at this emulator, and at
        ``sender``'s keys when its webhooks are to be verified."""
        env = {
            "CALLREC_QUO_API_KEY": self.api_key,
            "CALLREC_QUO_API_BASE": self.base_url,
            "CALLREC_QUO_AUDIO_HOSTS": self.audio_host,
        }
        if sender is not None:
            env["CALLREC_QUO_SIGNING_KEY"] = sender.signing_key_b64
            env["CALLREC_QUO_WEBHOOK_SECRET"] = sender.webhook_secret
        return env

    # -- calls and recordings -------------------------------------------------------------------

    def add_call(
        self,
        call_id: str | None = None,
        *,
        segments: int = 1,
        size: int = 32768,
        status: str = "completed",
        duration: int = 60,
        created_at: datetime | None = None,
        call_status: str = "completed",
        phone_number_id: str = "PNtoDbDhuz",
        participant: str = QUO_PARTICIPANT,
        user_id: str = "USu5AsEHuQ",
    ) -> QuoCall:
        """A call with ``segments`` recordings (0 for an unrecorded call) in ``status``.

        Without ``created_at`` the call ends now; with it, it ends ``segments`` recordings
        later. A ``call_status`` in ``LIVE_STATUSES`` leaves it live (no ``completedAt``)
        until :meth:`finish_call`.
        """
        if call_status not in CALL_STATUSES:
            raise ValueError(f"unknown call status {call_status!r}")
        length = timedelta(seconds=(duration + 5) * max(segments, 1))
        if created_at is None:
            created_at = datetime.now(UTC).replace(microsecond=0) - length
        call = QuoCall(
            id=call_id or _new_id("AC", 32),
            created_at=created_at,
            completed_at=None if call_status in LIVE_STATUSES else created_at + length,
            status=call_status,
            phone_number_id=phone_number_id,
            participant=participant,
            user_id=user_id,
        )
        with self._lock:
            if call.id in self._calls:
                raise ValueError(f"call {call.id} already exists")
            self._calls[call.id] = call
        for _ in range(segments):
            self.add_recording(call.id, status=status, size=size, duration=duration)
        return call

    def finish_call(self, call_id: str, at: datetime | None = None) -> None:
        """End a live call (``completed``) at ``at`` (default now)."""
        with self._lock:
            call = self._calls[call_id]
            call.status = "completed"
            call.completed_at = at or datetime.now(UTC).replace(microsecond=0)

    def add_activity(self, phone_number_id: str, participant: str, at: datetime) -> None:
        """Other activity (a message, say) in a conversation: it moves ``updatedAt`` only."""
        with self._lock:
            key = (phone_number_id, participant)
            self._activity[key] = max(at, self._activity.get(key, at))

    def add_recording(
        self, call_id: str, *, status: str = "completed", size: int = 32768, duration: int = 60
    ) -> QuoRecording:
        """Append a segment to the call (it starts after the previous one)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            call = self._calls[call_id]
            start = call.created_at + timedelta(seconds=(duration + 5) * len(call.recordings))
            rid = _new_id("CR", 10)
            rec = QuoRecording(rid, call_id, status, start, duration, size, seed=rid)
            call.recordings.append(rec)
            self._recordings[rid] = rec
        return rec

    def set_status(self, recording_id: str, status: str) -> None:
        """Move a recording to another status (e.g. ``processing`` → ``completed``)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._lock:
            self._recordings[recording_id].status = status

    def get_call(self, call_id: str) -> QuoCall | None:
        with self._lock:
            return self._calls.get(call_id)

    def presign(self, recording_id: str, ttl: float | None = None) -> str:
        """A URL for the recording's audio valid ``ttl`` s (default ``url_ttl_seconds``)."""
        ttl = self.url_ttl_seconds if ttl is None else ttl
        return self._media.presign(self.url, recording_id, "mp3", ttl)

    # -- WSGI -----------------------------------------------------------------------------------

    def crash_response(self) -> Response:
        return _json(error_body(500, "Unknown", "Unknown error"), 500)

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/v1/"):
            return self._api(request)
        if request.path.startswith("/media/"):
            fault = self.take_fault("audio", request.method)
            return self._media.serve(request, fault, self._media_file)
        return _json(error_body(404, "Not Found", "Not found"), 404)

    def _media_file(self, recording_id: str, ext: str) -> MediaFile | None:
        with self._lock:
            rec = self._recordings.get(recording_id)
        if rec is None or ext != "mp3" or rec.status != "completed":
            return None
        return MediaFile(rec.audio(), "audio/mpeg", rec.start_time)

    def _api(self, request: Request) -> Response:
        fault = self.take_fault("api", request.method)
        if fault is not None:
            if fault.kind == "slow":
                time.sleep(float(fault.opts.get("seconds", 1.0)))
            elif fault.kind == "429":
                return self._too_many(str(fault.opts.get("retry_after", 1)))
            else:
                status = int(fault.kind)
                title = "Unknown" if status == 500 else "Service Unavailable"
                return _json(error_body(status, title, "Temporary failure"), status)
        key = request.headers.get("Authorization", "")
        if self._over_limit(key):
            return self._too_many("1")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return _json(error_body(401, "Unauthorized", "Invalid API key"), 401)
        lists = {"/v1/conversations": self._conversations, "/v1/calls": self._calls_page}
        match = _CALL_RE.fullmatch(request.path)
        if match is None and request.path not in lists:
            return _json(error_body(404, "Not Found", "Not found"), 404)
        if request.method not in ("GET", "HEAD"):
            return _json(error_body(405, "Method Not Allowed", "Method not allowed"), 405)
        if match is None:
            return lists[request.path](_Query(request.args))
        return self._call_recordings(match.group(1))

    def _call_recordings(self, call_id: str) -> Response:
        if not call_id.startswith("AC"):
            return _invalid([_problem("/callId", "Expected string to match '^AC(.*)$'", call_id)])
        call = self.get_call(call_id)
        if call is None:
            return _json(error_body(404, "Not Found", "Call not found"), 404)
        with self._lock:
            recordings = list(call.recordings)
        items = [rec.item(self.presign(rec.id)) for rec in recordings]
        return _json({"data": items}, 200)

    def _conversations(self, query: _Query) -> Response:
        """``GET /v1/conversations``: one per (line, participant), latest activity first."""
        lines = set(query.many("phoneNumbers"))
        user = query.args.get("userId")
        created = query.window("createdAfter", "createdBefore")
        updated = query.window("updatedAfter", "updatedBefore")
        size = query.max_results()
        if query.problems:
            return _invalid(query.problems)
        with self._lock:
            calls = list(self._calls.values())
            activity = dict(self._activity)
        groups: dict[tuple[str, str], list[QuoCall]] = {}
        for call in calls:
            groups.setdefault((call.phone_number_id, call.participant), []).append(call)
        items = []
        for (line, participant), group in groups.items():
            first = min(c.created_at for c in group)
            last_call = max(group, key=lambda c: c.activity)
            last = max(last_call.activity, activity.get((line, participant), first))
            users = {c.user_id for c in group}
            wanted = (not lines or line in lines) and (not user or user in users)
            if not (wanted and _within(first, created) and _within(last, updated)):
                continue
            key = hashlib.sha256(f"{line}|{participant}".encode()).hexdigest()[:32]
            items.append({
                "assignedTo": None, "createdAt": iso_ms(first), "deletedAt": None,
                "id": f"CN{key}", "lastActivityAt": iso_ms(last), "lastActivityId": last_call.id,
                "mutedUntil": None, "name": None, "participants": [participant],
                "phoneNumberId": line, "snoozedUntil": None, "updatedAt": iso_ms(last),
            })  # fmt: skip
        items.sort(key=lambda c: (c["lastActivityAt"], c["id"]), reverse=True)
        return _page(query, "conversations", items, size)

    def _calls_page(self, query: _Query) -> Response:
        """``GET /v1/calls``: one line's calls with one participant, newest first."""
        line = query.args.get("phoneNumberId")
        participants = query.many("participants")
        if not line:
            query.problems.append(_problem("/phoneNumberId", "Expected required property", None))
        if len(participants) != 1:
            message = (
                "Expected required property"
                if not participants
                else ("Expected array to contain exactly 1 item")
            )
            query.problems.append(_problem("/participants", message, participants or None))
        elif not _E164_RE.fullmatch(participants[0]):
            message = "Expected string to be a phone number in E.164 format"
            query.problems.append(_problem("/participants/0", message, participants[0]))
        user = query.args.get("userId")
        created = query.window("createdAfter", "createdBefore")
        size = query.max_results()
        if query.problems:
            return _invalid(query.problems)
        with self._lock:
            calls = [
                c
                for c in self._calls.values()
                if (c.phone_number_id, [c.participant]) == (line, participants)
                and (not user or c.user_id == user)
                and _within(c.created_at, created)
            ]
        calls.sort(key=lambda c: (c.created_at, c.id), reverse=True)
        return _page(query, "calls", [c.item() for c in calls], size)

    def _over_limit(self, key: str) -> bool:
        """Count this request against ``key``; True when it is past ``rate_limit`` per second."""
        if self.rate_limit is None:
            return False
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault(key, collections.deque())
            while recent and now - recent[0] >= 1.0:
                recent.popleft()
            if len(recent) >= self.rate_limit:
                return True
            recent.append(now)
            return False

    @staticmethod
    def _too_many(retry_after: str) -> Response:
        body = error_body(429, "Too Many Requests", "Rate limit exceeded: 10 requests per second")
        return _json(body, 429, {"Retry-After": retry_after})


# -- list queries -----------------------------------------------------------------------------

Window = tuple[datetime | None, datetime | None]


class _Query:
    """A list request's query, its problems collected as Quo's validation ``errors[]``."""

    def __init__(self, args: MultiDict[str, str]) -> None:
        self.args = args
        self.problems: list[dict[str, Any]] = []

    def many(self, name: str) -> list[str]:
        """An array parameter, sent as ``name=…`` or ``name[]=…`` (repeated)."""
        return self.args.getlist(name) + self.args.getlist(f"{name}[]")

    def window(self, after: str, before: str) -> Window:
        return self._time(after), self._time(before)

    def _time(self, name: str) -> datetime | None:
        raw = self.args.get(name)
        if raw is None:
            return None
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            self.problems.append(_problem(f"/{name}", "Expected string to be a date-time", raw))
            return None
        return moment

    def max_results(self) -> int:
        raw = self.args.get("maxResults", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_RESULTS:
            message = f"Expected integer to be between 1 and {MAX_RESULTS}"
            self.problems.append(_problem("/maxResults", message, raw))
            return 0
        return int(raw)


def _within(moment: datetime, window: Window) -> bool:
    """Both bounds exclusive ("after", "before")."""
    after, before = window
    return (after is None or moment > after) and (before is None or moment < before)


def _problem(path: str, message: str, value: Any) -> dict[str, Any]:
    return {"path": path, "message": message, "value": value, "schema": {"type": "string"}}


def _invalid(problems: list[dict[str, Any]]) -> Response:
    """Quo's validation error: 400 with ``errors[]`` and no ``trace``."""
    body = error_body(400, "Bad Request", "Invalid request", errors=problems)
    body.pop("trace")
    return _json(body, 400)


def _page(query: _Query, scope: str, items: list[dict[str, Any]], size: int) -> Response:
    """One page of ``items`` from the query's ``pageToken`` (an opaque offset bound to the
    query: a token from another query is a 400)."""
    bound = sorted((k, v) for k, v in query.args.items(multi=True) if k not in _PAGING)
    digest = hashlib.sha256(json.dumps([scope, bound]).encode()).hexdigest()[:16]
    offset = 0
    token = query.args.get("pageToken")
    if token:
        try:
            offset, token_digest = json.loads(base64.urlsafe_b64decode(token.encode()))
        except (ValueError, TypeError, binascii.Error):
            token_digest = None
        if token_digest != digest or not isinstance(offset, int) or offset < 0:
            return _invalid([_problem("/pageToken", "Invalid page token", token)])
    end = offset + size
    next_token = None
    if end < len(items):
        next_token = base64.urlsafe_b64encode(json.dumps([end, digest]).encode()).decode()
    body = {"data": items[offset:end], "totalItems": len(items), "nextPageToken": next_token}
    return _json(body, 200)


_PAGING = ("pageToken", "maxResults")


# -- webhooks ---------------------------------------------------------------------------------

Shape = Literal["object", "resource"]
Scheme = Literal["legacy", "standard"]


def call_event_body(
    call: QuoCall | None = None,
    *,
    event_type: str = "call.recording.completed",
    shape: Shape = "object",
    event_id: str | None = None,
) -> bytes:
    """The compact JSON bytes of a Quo call webhook.

    ``shape="object"``: the legacy envelope (``object: "event"``, ``apiVersion: "v3"``, call at
    ``data.object``; Pipedream's captured test event, providers.md §2.1). ``"resource"``: the
    2026-03-30 envelope (call at ``data.resource``, plus ``context`` and ``links``). Without
    ``call`` the ids are random. Phone numbers are the 555-01xx fiction range.
    """
    now = datetime.now(UTC)
    call = call or QuoCall(_new_id("AC", 32), now - timedelta(minutes=2), now)
    media_base = "https://storage.googleapis.com/opstatics-dev"
    resource = {
        "id": call.id,
        "object": "call",
        "from": call.participant if call.direction == "incoming" else QUO_LINE,
        "to": QUO_LINE if call.direction == "incoming" else call.participant,
        "direction": call.direction,
        "media": [
            {"url": f"{media_base}/{rec.id}.mp3", "type": "audio/mpeg", "duration": rec.duration}
            for rec in call.recordings
        ],
        "voicemail": None,
        "status": call.status,
        "createdAt": iso_ms(call.created_at),
        "answeredAt": iso_ms(call.created_at + timedelta(seconds=4)),
        "completedAt": iso_ms(call.completed_at) if call.completed_at else None,
        "userId": call.user_id,
        "phoneNumberId": call.phone_number_id,
        "conversationId": _new_id("CN", 32),
    }  # fmt: skip
    envelope: dict[str, Any] = {
        "id": event_id or _new_id("EV", 32),
        "object": "event",
        "apiVersion": "v3",
        "createdAt": iso_ms(now),
        "type": event_type,
        "data": {"object": resource},
    }
    if shape == "resource":
        envelope = {
            "id": envelope["id"],
            "apiVersion": "2026-03-30",
            "createdAt": envelope["createdAt"],
            "type": event_type,
            "data": {
                "resource": resource,
                "context": {},
                "links": {"quo": f"https://my.quo.com/calls/{call.id}"},
            },
        }
    return json.dumps(envelope, separators=(",", ":")).encode()


class QuoWebhookSender:
    """Signs and posts Quo webhooks under either scheme.

    Legacy: ``openphone-signature: hmac;1;<ts>;<base64 HMAC-SHA256(key, f"{ts}.{body}")>`` with
    the base64-decoded signing key. Standard Webhooks: signed by the ``standardwebhooks``
    library with the ``whsec_`` secret.
    """

    call_event_body = staticmethod(call_event_body)

    def __init__(self, signing_key: bytes | None = None, webhook_secret: bytes | None = None):
        self.signing_key = signing_key or secrets.token_bytes(32)
        self._standard_key = webhook_secret or secrets.token_bytes(24)

    @property
    def signing_key_b64(self) -> str:
        """``CALLREC_QUO_SIGNING_KEY``: the key as base64 (what the app reveals)."""
        return base64.b64encode(self.signing_key).decode()

    @property
    def webhook_secret(self) -> str:
        """``CALLREC_QUO_WEBHOOK_SECRET``: ``whsec_`` + base64 of the key."""
        return "whsec_" + base64.b64encode(self._standard_key).decode()

    def legacy_headers(
        self, body: bytes, timestamp: int | None = None, *, unit: Literal["ms", "s"] = "ms"
    ) -> dict[str, str]:
        """Headers of a legacy delivery; ``timestamp`` defaults to now in ``unit`` (Quo: ms)."""
        if timestamp is None:
            timestamp = int(time.time() * 1000) if unit == "ms" else int(time.time())
        digest = hmac.new(self.signing_key, f"{timestamp}.".encode() + body, hashlib.sha256)
        signature = base64.b64encode(digest.digest()).decode()
        return {
            "openphone-signature": f"hmac;1;{timestamp};{signature}",
            "content-type": "application/json",
        }

    def standard_headers(
        self,
        body: bytes,
        *,
        msg_id: str | None = None,
        timestamp: int | None = None,
        extra_secrets: Sequence[str] = (),
    ) -> dict[str, str]:
        """Headers of a Standard Webhooks delivery; ``extra_secrets`` sign too (rotation).

        The library signs text: a body that is not UTF-8 is signed as its replaced decoding,
        so it never verifies (no real producer can send one).
        """
        msg_id = msg_id or _new_id("msg_", 24)
        sent = datetime.fromtimestamp(int(time.time()) if timestamp is None else timestamp, UTC)
        signatures = [
            Webhook(secret).sign(msg_id, sent, body.decode(errors="replace"))
            for secret in (*extra_secrets, self.webhook_secret)
        ]
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent.timestamp())),
            "webhook-signature": " ".join(signatures),
            "content-type": "application/json",
        }

    def headers(self, body: bytes, scheme: Scheme = "legacy") -> dict[str, str]:
        return self.legacy_headers(body) if scheme == "legacy" else self.standard_headers(body)

    def post(
        self, url: str, body: bytes, scheme: Scheme = "legacy", timeout: float = 20
    ) -> httpx.Response:
        """Sign ``body`` under ``scheme`` and POST it to ``url``."""
        return httpx.post(url, content=body, headers=self.headers(body, scheme), timeout=timeout)
