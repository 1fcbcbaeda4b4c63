"""A real HTTP emulator of VoiceGenie's ``GET /callRecordings`` (seed ``000_…``).

What it serves (one loopback port):

- ``GET /callRecordings`` — ``x-api-key`` exactly, else 401. Filters ``campaign_id`` (exact),
  ``start_date``/``end_date`` (ISO 8601; inclusive bounds on ``created_at``; a value that does
  not parse is a 400). Pages ``page`` (from 1) and ``limit`` (1…``max_limit``, default 20 as in
  the seed's example; anything else is a 400), newest first, answered in the seed's envelope
  ``{"success": true, "message", "data": {"recordings": [...], "pagination": {page, limit,
  total, total_pages}}}``; a page past the end has no recordings. Errors use the same envelope
  with ``success: false`` (the seed shows no error body: UNCONFIRMED).
- ``recording_url``: an expiring presigned S3-style URL to ``/media/{call_uuid}.{format}``
  (:mod:`emulators.media`: Range, faults), ``null`` until the recording is ``completed``.
- ``file_size`` is the audio's size unless a recording is told to lie (``reported_size``), so
  callrec's size check can be exercised.

Faults: :meth:`Emulator.inject` on ``"api"`` (failing pages on demand: the next requests get
429 with ``Retry-After``, 500, 503 or a delay) and ``"audio"``. :attr:`refuse_with` makes the
API answer HTTP 200 with ``success: false`` and that message.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from emulators.audio import MP3_PREFIX, AudioSource, wav_header
from emulators.base import Emulator, json_response
from emulators.media import MediaFile, PresignedMedia, iso_ms
from emulators.numbers import VOICEGENIE_PREFIX

__all__ = ["VoiceGenieEmulator", "VoiceGenieRecording", "envelope_error", "minutes_ago"]

CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav"}
DEFAULT_LIMIT = 20


def envelope_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in the seed's envelope: ``{"success": false, "message": …, "data": null}``."""
    return json_response({"success": False, "message": message, "data": None}, status, headers)


@dataclass
class VoiceGenieRecording:
    """One call recording as VoiceGenie lists it."""

    call_uuid: str
    created_at: datetime
    size: int
    duration: int
    format: str
    status: str
    campaign_id: str
    phone_number: str
    reported_size: int | None = None  # a lying ``file_size`` when set
    _audio: AudioSource | None = field(default=None, repr=False, compare=False)

    def audio(self) -> AudioSource:
        """The bytes served for this recording (an ID3 or RIFF header first)."""
        if self._audio is None:
            prefix = MP3_PREFIX if self.format == "mp3" else wav_header(self.size, 1)
            self._audio = AudioSource(self.size, f"voicegenie:{self.call_uuid}", prefix=prefix)
        return self._audio

    def item(self, url: str | None) -> dict[str, Any]:
        """The list item of the seed; ``recording_url`` only once ``completed``."""
        return {
            "call_uuid": self.call_uuid,
            "recording_url": url if self.status == "completed" else None,
            "duration": self.duration,
            "file_size": self.size if self.reported_size is None else self.reported_size,
            "format": self.format,
            "transcription_available": False,
            "campaign_id": self.campaign_id,
            "phone_number": self.phone_number,
            "status": self.status,
            "created_at": iso_ms(self.created_at).replace(".000Z", "Z"),  # whole seconds
        }


class VoiceGenieEmulator(Emulator):
    """VoiceGenie's recordings list and expiring S3-style audio URLs on one loopback port."""

    def __init__(
        self,
        api_key: str = "test-voicegenie-key",
        url_ttl_seconds: float = 600.0,
        *,
        max_limit: int = 100,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.url_ttl_seconds = url_ttl_seconds
        self.max_limit = max_limit
        #: When set, the API answers HTTP 200 ``{"success": false, "message": refuse_with}``.
        self.refuse_with: str | None = None
        self._media = PresignedMedia()
        self._recordings: dict[str, VoiceGenieRecording] = {}
        self._queries: list[dict[str, str]] = []

    @property
    def base_url(self) -> str:
        """The API base (``CALLREC_VOICEGENIE_API_BASE``): the server root."""
        return self.url

    def settings_env(self) -> dict[str, str]:
        """The ``CALLREC_VOICEGENIE_*`` settings that point callrec at this emulator."""
        return {
            "CALLREC_VOICEGENIE_API_KEY": self.api_key,
            "CALLREC_VOICEGENIE_API_BASE": self.base_url,
            "CALLREC_VOICEGENIE_AUDIO_HOSTS": self.audio_host,
        }

    # -- recordings ---------------------------------------------------------------------------
    def add_recording(
        self,
        call_uuid: str | None = None,
        *,
        size: int = 32_768,
        duration: int = 60,
        format: str = "mp3",
        status: str = "completed",
        campaign_id: str = "campaign_xyz789",
        created_at: datetime | None = None,
        reported_size: int | None = None,
    ) -> VoiceGenieRecording:
        """A recording created at ``created_at`` (default now, to the second; naive is UTC)."""
        if format not in CONTENT_TYPES:
            raise ValueError(f"unsupported format {format!r}")
        created = created_at or datetime.now(UTC)
        created = created.replace(tzinfo=UTC) if created.tzinfo is None else created
        rec = VoiceGenieRecording(
            call_uuid=call_uuid or f"call-{uuid.uuid4()}",
            created_at=created.replace(microsecond=0),
            size=size,
            duration=duration,
            format=format,
            status=status,
            campaign_id=campaign_id,
            phone_number=VOICEGENIE_PREFIX + f"{secrets.randbelow(200):03d}",
            reported_size=reported_size,
        )
        with self._lock:
            if rec.call_uuid in self._recordings:
                raise ValueError(f"recording {rec.call_uuid} already exists")
            self._recordings[rec.call_uuid] = rec
        return rec

    def update(self, call_uuid: str, **changes: Any) -> None:
        """Change a recording's ``status``, ``reported_size``… (e.g. processing → completed)."""
        with self._lock:
            rec = self._recordings[call_uuid]
            for name, value in changes.items():
                if name not in {"status", "reported_size", "campaign_id"}:
                    raise TypeError(f"cannot change {name!r}")
                setattr(rec, name, value)

    def presign(self, rec: VoiceGenieRecording, ttl: float | None = None) -> str:
        ttl = self.url_ttl_seconds if ttl is None else ttl
        return self._media.presign(self.url, rec.call_uuid, rec.format, ttl)

    @property
    def api_queries(self) -> list[dict[str, str]]:
        """The query parameters of every authenticated list request, in order."""
        with self._lock:
            return [dict(q) for q in self._queries]

    # -- WSGI ---------------------------------------------------------------------------------
    def crash_response(self) -> Response:
        return envelope_error(500, "Internal server error")

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/media/"):
            fault = self.take_fault("audio", request.method)
            return self._media.serve(request, fault, self._media_file)
        if request.path != "/callRecordings":
            return envelope_error(404, "Not found")
        fault = self.take_fault("api", request.method)
        if fault is not None:
            if fault.kind == "slow":
                time.sleep(float(fault.opts.get("seconds", 1.0)))
            elif fault.kind == "429":
                retry_after = str(fault.opts.get("retry_after", 1))
                return envelope_error(429, "Too many requests", {"Retry-After": retry_after})
            else:
                return envelope_error(int(fault.kind), "Temporary failure, try again")
        key = request.headers.get("x-api-key", "")
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return envelope_error(401, "Invalid or missing API key")
        if request.method not in ("GET", "HEAD"):
            return envelope_error(405, "Method not allowed")
        with self._lock:
            self._queries.append(dict(request.args.items()))
        if self.refuse_with is not None:
            return json_response({"success": False, "message": self.refuse_with}, 200)
        return self._list(request)

    def _list(self, request: Request) -> Response:
        args = request.args
        try:
            page = int(args.get("page", "1"))
            limit = int(args.get("limit", str(DEFAULT_LIMIT)))
            since = _parse_date(args.get("start_date"))
            until = _parse_date(args.get("end_date"))
        except ValueError as exc:
            return envelope_error(400, f"Invalid query parameter: {exc}")
        if page < 1 or not 1 <= limit <= self.max_limit:
            return envelope_error(400, f"page must be >= 1 and limit 1 to {self.max_limit}")
        campaign = args.get("campaign_id")
        with self._lock:
            matching = [
                rec
                for rec in self._recordings.values()
                if (campaign is None or rec.campaign_id == campaign)
                and (since is None or rec.created_at >= since)
                and (until is None or rec.created_at <= until)
            ]
        matching.sort(key=lambda rec: (rec.created_at, rec.call_uuid), reverse=True)
        chosen = matching[(page - 1) * limit : page * limit]
        body = {
            "success": True,
            "message": "Call recordings retrieved successfully",
            "data": {
                "recordings": [rec.item(self.presign(rec)) for rec in chosen],
                "pagination": {
                    "page": page,
                    "limit": limit,
                    "total": len(matching),
                    "total_pages": math.ceil(len(matching) / limit),
                },
            },
        }
        return json_response(body, 200)

    def _media_file(self, call_uuid: str, ext: str) -> MediaFile | None:
        with self._lock:
            rec = self._recordings.get(call_uuid)
        if rec is None or ext != rec.format or rec.status != "completed":
            return None
        return MediaFile(rec.audio(), CONTENT_TYPES[rec.format], rec.created_at)


def _parse_date(value: str | None) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; a bare date is midnight UTC), or None if absent."""
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 date") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def minutes_ago(minutes: float) -> datetime:
    """Now minus ``minutes``, to the second (for tests placing recordings in time)."""
    return (datetime.now(UTC) - timedelta(minutes=minutes)).replace(microsecond=0)
