"""VoiceGenie: no webhooks; recordings are listed by ``GET /callRecordings`` and polled.

The contract is the seed page ``000_…`` (providers.md §4: it matches no public VoiceGenie API we
could find, so everything VoiceGenie-specific stays in this module):

* ``GET /callRecordings`` with the ``x-api-key`` header; filters ``campaign_id``, ``start_date``,
  ``end_date`` (ISO 8601 in UTC with ``Z``, as the seed's ``'2024-01-01T00:00:00Z'`` and its
  ``created_at`` values); pages ``page``/``limit`` with ``data.pagination.total_pages``;
* every answer is the envelope ``{"success", "message", "data"}``. ``success: false`` is an
  error whose ``message`` is the reason. It is retried (``RetryLater``): the seed gives no
  status to tell a transient refusal from a permanent one, and the capture's attempt limit
  still ends a permanent one ``failed`` with that message;
* a recording is ``{call_uuid, recording_url (S3), duration, file_size, format, status,
  campaign_id, created_at, phone_number, transcription_available}``. ``call_uuid`` is the only
  id, so it is the recording id (and the call id).

Webhooks: VoiceGenie sends none for recordings (its only documented webhook is a post-call
analysis without a recording URL or signature, providers.md §4), so ``/webhooks/voicegenie``
answers 404 (``WebhooksNotOffered``) and recordings reach the ledger through the reconciler,
which calls :meth:`VoiceGenieProvider.list_recordings`.

Fresh URLs: the list is the only endpoint, so :meth:`~VoiceGenieProvider.fetch_recording` lists
again, right before the download, to read the recording's current ``recording_url``. It narrows
the search as far as the API allows: the recording's ``campaign_id`` and a window of a few
minutes around its ``created_at`` (one request, usually one page); if the recording is not in
that window (the seed does not say which time ``start_date`` filters on), the window of the
listing that found it. Cost: one list request per capture attempt and per URL refresh, more
pages only when the window holds more than a page of recordings.

Statuses (the seed shows only ``completed``): ``completed`` is captured; ``failed``,
``deleted``, ``absent`` and ``error`` end the row ``failed`` (nothing will ever be there); any
other (``processing``, ``in-progress``, unknown) is ``NotReadyYet``, retried until the attempt
limit. The downloaded size is checked against ``file_size`` (``Download.expected_size``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from providers.base import Account, Download, Provider, RecordingRef, WebhookEvent, WebhookRequest
from providers.errors import (
    NotReadyYet,
    PermanentFailure,
    RetryLater,
    WebhooksNotOffered,
)
from providers.http import ApiClient, retry_briefly

__all__ = ["VoiceGenieProvider"]

logger = logging.getLogger(__name__)

LIST_PATH = "/callRecordings"
# The seed's example pages by 20 and states no maximum; 100 keeps a window to few requests.
PAGE_LIMIT = 100
MAX_PAGES = 10_000  # a bound on every page walk: 1 M recordings per window
PAGE_ATTEMPTS = 3  # one page is retried this often within a walk before the walk gives up
PAGE_RETRY_WAIT_SECONDS = 0.5  # doubled per attempt when the API names no Retry-After
PAGE_RETRY_MAX_WAIT_SECONDS = 10.0  # a longer Retry-After ends the walk (the caller waits)
FIND_MARGIN = timedelta(minutes=5)
NO_WEBHOOKS = (
    "VoiceGenie sends no recording webhooks: recordings are captured by polling GET /callRecordings"
)

READY = "completed"
GONE_STATUSES = frozenset({"failed", "deleted", "absent", "error"})
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "webm": "audio/webm",
}
_EXTRA_FIELDS = ("campaign_id", "created_at", "status", "transcription_available", "phone_number")


class VoiceGenieProvider(Provider):
    name = "voicegenie"
    webhook_content_types = frozenset[str]()
    webhooks_not_offered = NO_WEBHOOKS
    credential_fields = ("api_key",)

    def __init__(
        self,
        account: Account,
        http: httpx.Client,
        *,
        page_limit: int = PAGE_LIMIT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(account, http)
        self.page_limit = page_limit
        self._sleep = sleep

    # -- ingest: there is nothing to receive ------------------------------------------------------
    def verify(self, request: WebhookRequest) -> None:
        raise WebhooksNotOffered(NO_WEBHOOKS)

    def parse(self, request: WebhookRequest) -> WebhookEvent:
        raise WebhooksNotOffered(NO_WEBHOOKS)

    # -- worker -----------------------------------------------------------------------------------
    def list_recordings(self, since: datetime, until: datetime) -> Iterator[RecordingRef]:
        """One ref per recording VoiceGenie lists for ``[since, until]``, over every page.

        Naive datetimes are taken as UTC. Items are yielded as listed, without filtering them
        again on our side: a ref outside the window costs one idempotent ledger insert, a
        dropped one would be lost. An item without a ``call_uuid`` cannot be captured; it is
        counted in a warning, never silently dropped.
        """
        since, until = _as_utc(since), _as_utc(until)
        if until < since:
            raise ValueError("until is before since")
        window = {"start_date": _utc_z(since), "end_date": _utc_z(until, round_up=True)}
        unnamed = 0
        for item in self._walk(window):
            ref = _ref(item, window)
            if ref is None:
                unnamed += 1
                continue
            yield ref
        if unnamed:
            logger.warning("VoiceGenie listed %d recording(s) without a call_uuid", unnamed)

    def fetch_recording(self, recording_id: str, hints: Mapping[str, Any]) -> Download:
        item = self._find(recording_id, hints)
        status = item.get("status")
        if status in GONE_STATUSES:
            raise PermanentFailure(f"recording status is {status!r} at VoiceGenie", "unavailable")
        if status != READY:
            raise NotReadyYet(f"recording status is {str(status)[:32]!r}")
        url = item.get("recording_url")
        if not isinstance(url, str) or not url:
            raise NotReadyYet("recording is completed but has no recording_url yet")
        fmt = _format(item.get("format"), url)
        return Download(
            url=url,
            format=fmt,
            content_type=CONTENT_TYPES.get(fmt, "application/octet-stream"),
            expected_size=_file_size(item),
            metadata=_metadata(item),
        )

    def resolve(self, lookup: Mapping[str, str]) -> list[RecordingRef]:
        """Never needed: VoiceGenie rows always name their recording (there are no webhooks)."""
        raise PermanentFailure(
            "VoiceGenie has no lookup rows: recordings come from GET /callRecordings by call_uuid"
        )

    def describe_error(self, response: httpx.Response) -> str:
        """``HTTP 401 Invalid API key`` from the envelope's ``message`` (or ``error``)."""
        try:
            body = response.json()
        except ValueError:
            body = None
        reason = f"HTTP {response.status_code}"
        if isinstance(body, dict):
            message = body.get("message") or body.get("error")
            if isinstance(message, str) and message.strip():
                reason += f" {message.strip()[:200]}"
        return reason

    # -- paging -----------------------------------------------------------------------------------
    def _api(self) -> ApiClient:
        key = self.account.secret("api_key")
        return self.api({"x-api-key": key, "accept": "application/json"})

    def _walk(self, filters: Mapping[str, str]) -> Iterator[Mapping[str, Any]]:
        """Every item of every page for ``filters``; ends at ``total_pages`` or an empty page."""
        api = self._api()
        page, total_pages = 1, 1
        while page <= total_pages:
            if page > MAX_PAGES:
                raise RetryLater(f"VoiceGenie lists more than {MAX_PAGES} pages for one window")
            recordings, total_pages = self._page(api, {**filters, "page": page})
            yield from recordings
            if not recordings:
                return
            page += 1

    def _page(
        self, api: ApiClient, params: Mapping[str, Any]
    ) -> tuple[list[Mapping[str, Any]], int]:
        """One page, retried up to ``PAGE_ATTEMPTS`` times so a walk survives a failed page."""
        return retry_briefly(
            lambda: _page_body(api.get_json(LIST_PATH, {**params, "limit": self.page_limit})),
            f"VoiceGenie page {params['page']}",
            attempts=PAGE_ATTEMPTS,
            base_wait=PAGE_RETRY_WAIT_SECONDS,
            max_wait=PAGE_RETRY_MAX_WAIT_SECONDS,
            sleep=self._sleep,
            account=(self.account.provider, self.account.name),
        )

    def _find(self, recording_id: str, hints: Mapping[str, Any]) -> Mapping[str, Any]:
        """The recording's current list item (fresh ``recording_url``), by the narrowest search."""
        campaign = hints.get("campaign_id")
        base = {"campaign_id": campaign} if isinstance(campaign, str) and campaign else {}
        for window in _search_windows(hints):
            for item in self._walk({**base, **window}):
                if item.get("call_uuid") == recording_id:
                    return item
        raise PermanentFailure(
            f"recording {recording_id[:64]} is no longer listed by VoiceGenie", "not_found"
        )


def _page_body(body: Any) -> tuple[list[Mapping[str, Any]], int]:
    """(recordings, total_pages) from the envelope; ``RetryLater`` naming what is wrong."""
    if not isinstance(body, dict):
        raise RetryLater("VoiceGenie answered with a body that is not an object")
    if body.get("success") is not True:
        message = body.get("message")
        text = message.strip()[:200] if isinstance(message, str) and message.strip() else "none"
        raise RetryLater(f"VoiceGenie answered success=false, message: {text}")
    data = body.get("data")
    recordings = data.get("recordings") if isinstance(data, dict) else None
    pagination = data.get("pagination") if isinstance(data, dict) else None
    if not isinstance(recordings, list):
        raise RetryLater("VoiceGenie answered without data.recordings")
    total = pagination.get("total_pages") if isinstance(pagination, dict) else None
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise RetryLater("VoiceGenie answered without data.pagination.total_pages")
    return [item for item in recordings if isinstance(item, dict)], total


def _as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is taken as UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc_z(moment: datetime, *, round_up: bool = False) -> str:
    """``2024-01-16T10:30:00Z``; whole seconds, rounded outwards so the window never shrinks."""
    moment = _as_utc(moment)
    if round_up and moment.microsecond:
        moment += timedelta(seconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return _as_utc(parsed)


def _number(value: Any) -> int | float | None:
    """A JSON number that is not a bool, NaN or infinite, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _ref(item: Mapping[str, Any], window: Mapping[str, str]) -> RecordingRef | None:
    """The ledger ref of one list item; hints keep how to find it again (never the URL)."""
    call_uuid = item.get("call_uuid")
    if not isinstance(call_uuid, str) or not call_uuid.strip() or len(call_uuid) > 256:
        return None
    hints: dict[str, Any] = {
        "listed_from": window["start_date"],
        "listed_until": window["end_date"],
    }
    if _parse_time(item.get("created_at")) is not None:
        hints["created_at"] = item["created_at"]
    duration = _number(item.get("duration"))
    if duration is not None and duration >= 0:
        hints["duration"] = duration
    campaign = item.get("campaign_id")
    if isinstance(campaign, str) and 0 < len(campaign) <= 256:
        hints["campaign_id"] = campaign
    return RecordingRef(recording_id=call_uuid, call_id=call_uuid, hints=hints)


def _search_windows(hints: Mapping[str, Any]) -> list[dict[str, str]]:
    """Date filters to look a recording up by, narrowest first.

    Around ``created_at``: from ``duration`` + 5 min before to 5 min after, in case
    ``start_date`` filters on the call's start rather than on ``created_at``. Then the window of
    the listing that found it (it was there once). With neither, the whole list.
    """
    windows: list[dict[str, str]] = []
    created = _parse_time(hints.get("created_at"))
    if created is not None:
        duration = _number(hints.get("duration")) or 0
        before = FIND_MARGIN + timedelta(seconds=max(0.0, min(float(duration), 86_400.0)))
        windows.append(
            {"start_date": _utc_z(created - before), "end_date": _utc_z(created + FIND_MARGIN)}
        )
    listed = {"start_date": hints.get("listed_from"), "end_date": hints.get("listed_until")}
    valid = all(isinstance(v, str) and _parse_time(v) for v in listed.values())
    if valid and listed not in windows:
        windows.append({k: str(v) for k, v in listed.items()})
    return windows or [{}]


def _format(value: Any, url: str) -> str:
    """Storage extension: ``format`` if a short alphanumeric word, else the URL's, else mp3."""
    for candidate in (value, urlsplit(url).path.rpartition(".")[2]):
        if isinstance(candidate, str) and candidate.isalnum() and len(candidate) <= 8:
            return candidate.lower()
    return "mp3"


def _file_size(item: Mapping[str, Any]) -> int | None:
    size = item.get("file_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    return size


def _metadata(item: Mapping[str, Any]) -> dict[str, Any]:
    """Fields for the metadata record; the signed ``recording_url`` is deliberately left out.

    ``created_at`` is kept as VoiceGenie's own field, not as ``started_at``/``ended_at``: the
    seed does not say whether it marks the call's start, its end or the upload.
    """
    record: dict[str, Any] = {
        "call_id": item.get("call_uuid"),
        "started_at": None,
        "ended_at": None,
        "duration_seconds": _number(item.get("duration")),
        "channels": None,
        "file_size": _file_size(item),
    }
    for key in _EXTRA_FIELDS:
        if item.get(key) is not None:
            record[key] = item[key]
    return record
