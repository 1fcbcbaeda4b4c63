"""VOXO: no webhooks; recordings are listed from call reports and fetched by a 60-second URL.

API (seed ``001``, providers.md §3):

* ``POST /authentication`` ``{"strategy": "local", "email", "password"}`` → ``accessToken``,
  sent as ``Authorization: Bearer``. Its lifetime is not documented (UNCONFIRMED): the token is
  cached per provider instance (thread-safe) until the ``exp`` of its JWT payload (or of
  ``authentication.payload``, the Feathers response shape) minus a margin, else for
  :data:`DEFAULT_TOKEN_SECONDS`; a 401 renews it and retries the call once.
* ``GET /call-reports?recordType=recordings&start&end&tenantId`` → a bare JSON array (no
  paging is documented, so one request per window), "up to 2 days" per request, times in
  Central wall time without an offset (:mod:`providers.voxo_time`). Only ``recorded == 1``
  rows have audio.
* ``GET /call-recordings/{uniqueId}?tenantId&start`` → ``{"uri": …}``, "expires after 60
  seconds", and ``start`` must be "provided as returned in the original call recording
  record": the list's string travels untouched in the ledger hints. ``fetch_recording`` is
  called by the capture task right before each download attempt and again when a download
  fails after its URL expired (``UrlExpired``/``StreamCut``), so a URL is never fetched early.

Webhooks: VOXO documents v2 webhooks for ``STARTCALL``/``ENDCALL``/… with no recording event,
signature or retry policy (§3, UNCONFIRMED), so ``/webhooks/voxo`` refuses every POST with 404
(:class:`~providers.errors.WebhooksNotOffered`). Error bodies are undocumented; the Feathers
shape ``{"name", "message", "code"}`` (the ``strategy: local`` login is Feathers') is read, as
are ``error``/``message``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from providers.base import Account, Download, Provider, RecordingRef, WebhookEvent, WebhookRequest
from providers.errors import CredentialsRefused, PermanentFailure, RetryLater, WebhooksNotOffered
from providers.http import ApiClient
from providers.voxo_time import listed_start_utc, query_windows

__all__ = ["VoxoProvider"]

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_SECONDS = 3600.0  # when the token carries no expiry
TOKEN_MARGIN_SECONDS = 30.0  # renew this long before the stated expiry
NO_WEBHOOKS = (
    "VOXO sends no webhooks: its recordings are polled from GET /call-reports "
    "(reconciliation), so nothing is accepted on this route"
)
CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "ogg": "audio/ogg", "m4a": "audio/mp4"}
_HINT_FIELDS = ("direction", "disposition")


class VoxoProvider(Provider):
    name = "voxo"
    webhook_content_types = frozenset()  # VOXO never posts to us
    webhooks_not_offered = NO_WEBHOOKS
    credential_fields = ("email", "password", "tenant_id")

    def __init__(
        self, account: Account, http: httpx.Client, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(account, http)
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0

    # -- ingest: there is none ------------------------------------------------------------------
    def verify(self, request: WebhookRequest) -> None:
        raise WebhooksNotOffered(NO_WEBHOOKS)

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        raise WebhooksNotOffered(NO_WEBHOOKS)

    def resolve(self, lookup: Mapping[str, str]) -> list[RecordingRef]:
        """Never needed: VOXO rows always come from the list, with their ``uniqueId``."""
        raise PermanentFailure("VOXO has no lookup rows: recordings are listed by uniqueId")

    # -- worker ---------------------------------------------------------------------------------
    def list_recordings(self, since: datetime, until: datetime) -> Iterator[RecordingRef]:
        """Recordings whose call started in ``[since, until]`` (aware datetimes), one request
        per ≤ 2-day window, each recording once even when two windows list it."""
        windows = query_windows(since, until)  # raises ValueError before any request
        return self._listed(windows)

    def _listed(self, windows: list[tuple[datetime, datetime, str, str]]) -> Iterator[RecordingRef]:
        first, last = windows[0][0], windows[-1][1]
        seen: set[str] = set()
        for _start, _stop, wall_start, wall_end in windows:
            rows = self._call(
                "/call-reports",
                {
                    "recordType": "recordings",
                    "start": wall_start,
                    "end": wall_end,
                    "tenantId": self._tenant(),
                },
            )
            if not isinstance(rows, list):
                raise RetryLater("call reports answered without a JSON array")
            for row in rows:
                ref = _recording_ref(row)
                if ref is None or ref.recording_id in seen:
                    continue
                started = listed_start_utc(ref.hints["start"], ref.recording_id or "")
                if started is not None and not first <= started <= last:
                    continue  # a wider wall-time window listed a call outside ours
                seen.add(ref.recording_id or "")
                yield ref

    def fetch_recording(self, recording_id: str, hints: Mapping[str, Any]) -> Download:
        start = hints.get("start")
        if not isinstance(start, str) or not start:
            raise PermanentFailure("a VOXO row needs the start its call report listed")
        body = self._call(
            f"/call-recordings/{quote(recording_id, safe='')}",
            {"tenantId": self._tenant(), "start": start},
        )
        url = body.get("uri") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise RetryLater("call recording answered without a uri")
        fmt = _format(url)
        return Download(
            url=url,
            format=fmt,
            content_type=CONTENT_TYPES[fmt],
            metadata=_metadata(recording_id, hints),
        )

    def describe_error(self, response: httpx.Response) -> str:
        """``HTTP 400 BadRequest: …`` from a Feathers error body, or ``error``/``message``."""
        try:
            body = response.json()
        except ValueError:
            body = None
        parts = [f"HTTP {response.status_code}"]
        if isinstance(body, dict):
            name = body.get("name") or body.get("error")
            if isinstance(name, str) and name:
                parts.append(name[:60])
            if isinstance(body.get("message"), str) and body["message"]:
                parts[-1] += ":"
                parts.append(body["message"][:200])
        return " ".join(parts)

    # -- API calls with the token ---------------------------------------------------------------
    def _tenant(self) -> str:
        return self.account.secret("tenant_id")

    def _call(self, path: str, params: Mapping[str, Any]) -> Any:
        """GET with the cached token; on 401 renew the token and try once more."""
        token = self._current_token()
        try:
            return self._authorized(token).get_json(path, params)
        except CredentialsRefused as exc:
            if exc.status != 401:
                raise
            logger.info("VOXO refused the access token (%s); renewing it", exc.reason)
            return self._authorized(self._renew(token)).get_json(path, params)

    def _authorized(self, token: str) -> ApiClient:
        return self.api({"authorization": f"Bearer {token}", "accept": "application/json"})

    def _current_token(self) -> str:
        with self._lock:
            if self._token is None or self._clock() >= self._token_expires:
                self._login()
            assert self._token is not None
            return self._token

    def _renew(self, rejected: str) -> str:
        """A new token, unless another thread already replaced the rejected one."""
        with self._lock:
            if self._token in (None, rejected):
                self._login()
            assert self._token is not None
            return self._token

    def _login(self) -> None:
        """``POST /authentication`` (lock held). The password never reaches a log or an error."""
        credentials = {
            "strategy": "local",
            "email": self.account.secret("email"),
            "password": self.account.secret("password"),
        }
        api = self.api({"accept": "application/json"})
        try:
            body = api.request_json("POST", "/authentication", json_body=credentials)
        except CredentialsRefused as exc:
            where = [self.account.sources.get(f, f"voxo {f}") for f in ("email", "password")]
            raise CredentialsRefused(
                f"VOXO refused the login of {' / '.join(where)} ({exc.reason})", exc.status
            ) from None
        token = body.get("accessToken") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RetryLater("authentication answered without an accessToken")
        now = self._clock()
        expires = _token_expiry(token, body)
        self._token = token
        self._token_expires = (
            now + DEFAULT_TOKEN_SECONDS if expires is None else expires - TOKEN_MARGIN_SECONDS
        )
        logger.info("VOXO access token obtained (valid %.0f s)", self._token_expires - now)


def _token_expiry(token: str, body: Mapping[str, Any]) -> float | None:
    """``exp`` (unix seconds) from the JWT payload or from ``authentication.payload``."""
    payload: Any = None
    parts = token.split(".")
    if len(parts) == 3:
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except (binascii.Error, ValueError):
            payload = None
    if not isinstance(payload, dict):
        authentication = body.get("authentication")
        payload = authentication.get("payload") if isinstance(authentication, dict) else None
    exp = payload.get("exp") if isinstance(payload, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


def _recording_ref(row: Any) -> RecordingRef | None:
    """The ref of a ``recorded == 1`` call report; None for other rows (logged when unusable)."""
    if not isinstance(row, dict) or row.get("recorded") not in (1, "1"):
        return None
    unique_id, start, report_id = row.get("uniqueId"), row.get("start"), row.get("id")
    if not (isinstance(unique_id, str) and unique_id and len(unique_id) <= 128):
        logger.warning("VOXO call report %s is recorded but has no uniqueId", str(report_id)[:64])
        return None
    if not (isinstance(start, str) and start and len(start) <= 64):
        logger.warning("VOXO recording %s is listed without a start", unique_id)
        return None
    hints: dict[str, Any] = {"start": start}
    if isinstance(report_id, str | int) and not isinstance(report_id, bool):
        hints["call_report_id"] = str(report_id)[:64]
    duration = _seconds(row.get("duration"))
    if duration is not None:
        hints["duration_seconds"] = duration
    hints.update(
        (key, row[key])
        for key in _HINT_FIELDS
        if isinstance(row.get(key), str) and len(row[key]) <= 32
    )
    return RecordingRef(recording_id=unique_id, call_id=hints.get("call_report_id"), hints=hints)


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def _format(url: str) -> str:
    """The audio format from the URL's extension (the seed's URIs end ``.mp3``); else mp3."""
    extension = urlsplit(url).path.rpartition(".")[2].lower()
    return extension if extension in CONTENT_TYPES else "mp3"


def _metadata(recording_id: str, hints: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata record's fields (issue 9 §3): times in UTC, the listed start kept as is."""
    started = listed_start_utc(str(hints.get("start")), recording_id)
    duration = _seconds(hints.get("duration_seconds"))
    ended = started + timedelta(seconds=duration) if started and duration is not None else None
    record: dict[str, Any] = {
        "call_id": hints.get("call_report_id"),
        "call_report_id": hints.get("call_report_id"),
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "duration_seconds": duration,
        "listed_start_central": hints.get("start"),
    }
    record.update((key, hints[key]) for key in _HINT_FIELDS if key in hints)
    return record


def _iso(instant: datetime | None) -> str | None:
    return instant.isoformat().replace("+00:00", "Z") if instant else None
