"""A real HTTP emulator of the Telnyx Call Recordings API, and a Telnyx webhook signer.

What it serves (one loopback port; see /work/shared/seeds/003_*, 004_* and providers.md §1):

- ``GET /v2/recordings`` — deepObject ``page[number]``/``page[size]`` (1..250, default 20) and
  ``filter[...]`` (the SDK's keys, incl. ``created_at``/``start_time``/``end_time`` ``[gte|lte]``),
  ordered by ``(created_at, id)``; ``meta`` = total_pages (``ceil(total/size)``, so 0 when
  empty), total_results, page_number, page_size. ``list_wrapped=True`` wraps each item as
  ``{"data": {...}}`` like the rendered docs page (the OpenAPI schema has them bare).
- ``GET /v2/recordings/{id}`` — ``{"data": {...}}`` with freshly presigned ``download_urls``.
- ``GET|HEAD /media/{id}.{mp3|wav}?X-Amz-...`` — S3-style presigned audio: 403 XML
  ``AccessDenied`` for a bad/missing signature, ``Request has expired`` once past its TTL,
  single ``Range`` (206), ``Accept-Ranges: bytes``, body streamed from an :class:`AudioSource`.

API routes need ``Authorization: Bearer <api_key>`` and carry ``x-ratelimit-*`` headers (a
1000-per-60-s window that is counted, never enforced; use ``inject(..., "429")``).

Presigned URLs, Range and audio faults: :mod:`emulators.media`; lifecycle, request log and
injectable faults: :mod:`emulators.base`.

Audio: mp3 is ``size`` bytes starting with an ID3v2 header, wav is ``wav_size`` bytes (default
``4 * size``, the ratio of 8 kHz 16-bit PCM to 32 kbit/s mp3) starting with a RIFF/WAVE header;
the rest is pseudo-random, derived from ``seed`` (different seeds per format).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import nacl.signing
from werkzeug.wrappers import Request, Response

from emulators.audio import MP3_PREFIX, AudioSource, wav_header
from emulators.base import Emulator, FaultKind, FaultTarget, RequestRecord
from emulators.base import json_response as _json
from emulators.media import MediaFile, PresignedMedia, StreamFn, iso_ms

# The audio body generator, looked up per request so bench/capture_child.py can pace it.
from emulators.media import stream_range as _stream
from emulators.numbers import TELNYX_FROM, TELNYX_TO

__all__ = [
    "RATE_LIMITED_BODY",
    "UNAUTHORIZED_BODY",
    "AudioFormat",
    "EmulatedRecording",
    "FaultKind",
    "FaultTarget",
    "RequestRecord",
    "TelnyxEmulator",
    "TelnyxWebhookSigner",
    "main",
    "recording_saved_body",
]

AudioFormat = Literal["mp3", "wav"]


def _errors(code: str, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"errors": [{"code": code, "title": title, "detail": detail, **extra}]}


# Documented bodies (OpenAPI components/responses; rate-limiting page).
UNAUTHORIZED_BODY = _errors("401", "Unauthorized", "Unauthorized")
NOT_FOUND_BODY = _errors(
    "10005", "Resource not found", "The requested resource or URL could not be found."
)
PAGE_NOT_FOUND_BODY = _errors("404", "Not Found", "Page not found")
RATE_LIMITED_BODY = _errors(
    "10011", "Too many requests", "You have exceeded the maximum number of allowed requests."
)
SERVER_ERROR_BODY = _errors("500", "Internal Server Error", "Internal server error")
UNAVAILABLE_BODY = _errors("503", "Service Unavailable", "Service unavailable")
METHOD_NOT_ALLOWED_BODY = _errors("405", "Method Not Allowed", "Method not allowed")

_MIME = {"mp3": "audio/mpeg", "wav": "audio/wav"}
_WEBHOOK_DELIVERED_TO = "http://example.invalid/webhooks/telnyx"

# filter[<key>] → EmulatedRecording attribute; filter[<key>][gte|lte] → datetime attribute.
_EQ_FILTERS = {
    "call_control_id": "call_control_id",
    "call_leg_id": "call_leg_id",
    "call_session_id": "call_session_id",
    "conference_id": "conference_id",
    "conference_region": "conference_region",
    "connection_id": "connection_id",
    "from": "from_",
    "to": "to",
    "sip_call_id": "sip_call_id",
}
_RANGE_FILTERS = {
    "created_at": "created_at",
    "start_time": "recording_started_at",
    "end_time": "recording_ended_at",
}
_FILTER_RE = re.compile(r"filter\[(\w+)\](?:\[(\w+)\])?")


def _now() -> datetime:
    """Now in UTC, truncated to the millisecond the API shows."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso_us(dt: datetime) -> str:
    """``2018-02-02T22:25:27.521992Z`` (the webhook's timestamp format)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class EmulatedRecording:
    """One recording the emulator serves; field names follow ``RecordingResponseData``."""

    id: str
    call_control_id: str
    call_leg_id: str
    call_session_id: str
    connection_id: str
    conference_id: str | None
    sip_call_id: str
    channels: str
    duration_millis: int
    from_: str
    to: str
    created_at: datetime
    recording_started_at: datetime
    recording_ended_at: datetime
    updated_at: datetime
    seed: str
    size: int
    wav_size: int
    initiated_by: str = "StartCallRecordingAPI"
    source: str = "call"
    conference_region: str | None = None
    emulator: TelnyxEmulator | None = field(default=None, repr=False, compare=False)
    _audio: dict[str, AudioSource] = field(default_factory=dict, repr=False, compare=False)

    def audio(self, fmt: AudioFormat = "mp3") -> AudioSource:
        """The bytes served for ``fmt``: mp3 is ``size`` bytes, wav ``wav_size`` bytes."""
        source = self._audio.get(fmt)
        if source is None:
            if fmt == "mp3":
                source = AudioSource(self.size, f"{self.seed}:mp3", prefix=MP3_PREFIX)
            elif fmt == "wav":
                channels = 2 if self.channels == "dual" else 1
                header = wav_header(self.wav_size, channels)
                source = AudioSource(self.wav_size, f"{self.seed}:wav", prefix=header)
            else:
                raise ValueError(f"unknown audio format {fmt!r}")
            source = self._audio.setdefault(fmt, source)
        return source

    def download_urls(self, ttl: float | None = None) -> dict[str, str]:
        """Freshly presigned ``{"mp3": url, "wav": url}`` from the owning emulator."""
        if self.emulator is None:
            raise RuntimeError("recording is not attached to an emulator")
        return {fmt: self.emulator.presign(self.id, fmt, ttl) for fmt in ("mp3", "wav")}

    def resource(self, download_urls: dict[str, str]) -> dict[str, Any]:
        """The ``RecordingResponseData`` JSON object."""
        return {
            "call_control_id": self.call_control_id,
            "call_leg_id": self.call_leg_id,
            "call_session_id": self.call_session_id,
            "channels": self.channels,
            "conference_id": self.conference_id,
            "connection_id": self.connection_id,
            "created_at": iso_ms(self.created_at),
            "download_urls": download_urls,
            "duration_millis": self.duration_millis,
            "from": self.from_,
            "id": self.id,
            "initiated_by": self.initiated_by,
            "record_type": "recording",
            "recording_ended_at": iso_ms(self.recording_ended_at),
            "recording_started_at": iso_ms(self.recording_started_at),
            "source": self.source,
            "status": "completed",
            "to": self.to,
            "updated_at": iso_ms(self.updated_at),
        }


class _BadParameter(Exception):
    def __init__(self, parameter: str, detail: str) -> None:
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


def _parse_time(parameter: str, value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _BadParameter(parameter, f"{parameter} must be an ISO 8601 datetime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int_param(args: Any, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    raw = args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadParameter(name, f"{name} must be an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise _BadParameter(name, f"{name} must be {bounds}")
    return value


class TelnyxEmulator(Emulator):
    """The Telnyx recordings API and its presigned audio URLs on one loopback port.

    A WSGI app; ``start()``/``stop()`` (or ``with``) serve it from a thread. All public methods
    are thread-safe. ``port=0`` picks a free port.
    """

    rate_limit = 1000
    rate_limit_window = 60.0

    def __init__(
        self,
        api_key: str = "test-telnyx-key",
        url_ttl_seconds: float = 600.0,
        list_wrapped: bool = False,
        *,
        port: int = 0,
        connection_id: str = "1494404757140276705",
    ) -> None:
        self.api_key = api_key
        self.url_ttl_seconds = url_ttl_seconds
        self.list_wrapped = list_wrapped
        self.connection_id = connection_id
        super().__init__(port)
        self._media = PresignedMedia()
        self._recordings: dict[str, EmulatedRecording] = {}
        self._last_created: datetime | None = None
        self._window_start = time.monotonic()
        self._window_count = 0
        #: Serve list pages of at most this many items whatever ``page[size]`` asks (None: no
        #: cap), so a few recordings spread over several pages.
        self.max_page_size: int | None = None
        #: ``page[number]`` of every list request answered, in order.
        self.list_pages_served: list[int] = []

    @property
    def base_url(self) -> str:
        """The API base, ``http://127.0.0.1:PORT/v2``."""
        return f"{self._server.url}/v2"

    # -- recordings ---------------------------------------------------------------------------

    def add_recording(
        self,
        recording_id: str | None = None,
        *,
        call_session_id: str | None = None,
        size: int = 32768,
        seed: str | None = None,
        channels: str = "dual",
        duration_millis: int = 60000,
        started_at: datetime | None = None,
        from_: str = TELNYX_FROM,
        to: str = TELNYX_TO,
        wav_size: int | None = None,
        call_leg_id: str | None = None,
        call_control_id: str | None = None,
        connection_id: str | None = None,
        conference_id: str | None = None,
    ) -> EmulatedRecording:
        """Add a completed recording; ids default to fresh uuid4s (call_control_id ``v3:...``).

        Without ``started_at`` the recording ends now and ``created_at`` strictly increases
        with each call (so list order = insertion order); with it, it ends ``duration_millis``
        later and ``created_at`` = ``recording_ended_at``. Timestamps are truncated to ms.
        """
        duration = timedelta(milliseconds=duration_millis)
        with self._lock:
            if started_at is None:
                ended = _now()
                if self._last_created is not None and ended <= self._last_created:
                    ended = self._last_created + timedelta(milliseconds=1)
                self._last_created = ended
                started = ended - duration
            else:
                if started_at.tzinfo is None:
                    started_at = started_at.replace(tzinfo=UTC)
                started = started_at.replace(
                    microsecond=started_at.microsecond // 1000 * 1000
                ).astimezone(UTC)
                ended = started + duration
            rid = recording_id or str(uuid.uuid4())
            if rid in self._recordings:
                raise ValueError(f"recording {rid} already exists")
            rec = EmulatedRecording(
                id=rid,
                call_control_id=call_control_id or f"v3:{secrets.token_urlsafe(40)}",
                call_leg_id=call_leg_id or str(uuid.uuid4()),
                call_session_id=call_session_id or str(uuid.uuid4()),
                connection_id=connection_id or self.connection_id,
                conference_id=conference_id,
                sip_call_id=f"{uuid.uuid4()}@127.0.0.1",
                channels=channels,
                duration_millis=duration_millis,
                from_=from_,
                to=to,
                created_at=ended,
                recording_started_at=started,
                recording_ended_at=ended,
                updated_at=ended,
                seed=seed or rid,
                size=size,
                wav_size=4 * size if wav_size is None else wav_size,
                source="conference" if conference_id else "call",
                emulator=self,
            )
            self._recordings[rid] = rec
        return rec

    def get_recording(self, recording_id: str) -> EmulatedRecording | None:
        """The recording with that id, or None."""
        with self._lock:
            return self._recordings.get(recording_id)

    def remove_recording(self, recording_id: str) -> None:
        """Forget a recording: the API answers 404 and its audio URLs 404 NoSuchKey."""
        with self._lock:
            self._recordings.pop(recording_id, None)

    @property
    def recordings(self) -> list[EmulatedRecording]:
        """All recordings in list order, ``(created_at, id)``."""
        with self._lock:
            recs = list(self._recordings.values())
        return sorted(recs, key=lambda r: (r.created_at, r.id))

    # -- presigned URLs -----------------------------------------------------------------------

    def presign(self, recording_id: str, fmt: AudioFormat, ttl: float | None = None) -> str:
        """A URL for the audio of ``recording_id`` valid ``ttl`` s (default url_ttl_seconds)."""
        ttl = self.url_ttl_seconds if ttl is None else ttl
        return self._media.presign(self.url, recording_id, fmt, ttl)

    # -- WSGI ---------------------------------------------------------------------------------

    def crash_response(self) -> Response:
        return _json(SERVER_ERROR_BODY, 500)

    def dispatch(self, request: Request) -> Response:
        path = request.path
        if path == "/v2" or path.startswith("/v2/"):
            return self._api(request)
        if path.startswith("/media/"):
            fault = self.take_fault("audio", request.method)
            return self._media.serve(
                request, fault, self._media_file, stream=self.audio_stream(request)
            )
        return _json(PAGE_NOT_FOUND_BODY, 404)

    def audio_stream(self, request: Request) -> StreamFn:
        """The body generator of one audio response; a subclass may pace or observe it."""
        return _stream

    def _media_file(self, recording_id: str, ext: str) -> MediaFile | None:
        rec = self.get_recording(recording_id)
        if rec is None or ext not in _MIME:
            return None
        fmt: AudioFormat = "mp3" if ext == "mp3" else "wav"
        return MediaFile(rec.audio(fmt), _MIME[fmt], rec.created_at)

    def _rate_headers(self) -> dict[str, str]:
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self.rate_limit_window:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            remaining = max(0, self.rate_limit - self._window_count)
            reset = math.ceil(self._window_start + self.rate_limit_window - now)
        return {
            "x-ratelimit-limit": str(self.rate_limit),
            "x-ratelimit-remaining": str(remaining),
            "x-ratelimit-reset": str(reset),
        }

    def _api(self, request: Request) -> Response:
        fault = self.take_fault("api", request.method)
        if fault is not None:
            if fault.kind == "429":
                retry_after = str(fault.opts.get("retry_after", 1))
                return _json(
                    RATE_LIMITED_BODY,
                    429,
                    {
                        "Retry-After": retry_after,
                        "x-ratelimit-limit": str(self.rate_limit),
                        "x-ratelimit-remaining": "0",
                        "x-ratelimit-reset": retry_after,
                    },
                )
            if fault.kind == "500":
                return _json(SERVER_ERROR_BODY, 500, self._rate_headers())
            if fault.kind == "503":
                return _json(UNAVAILABLE_BODY, 503, self._rate_headers())
            if fault.kind == "slow":
                time.sleep(float(fault.opts.get("seconds", 1.0)))
        response = self._api_route(request)
        response.headers.update(self._rate_headers())
        return response

    def _api_route(self, request: Request) -> Response:
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            return _json(UNAUTHORIZED_BODY, 401)
        parts = request.path.rstrip("/").split("/")  # ["", "v2", "recordings", id?]
        if len(parts) < 3 or len(parts) > 4 or parts[2] != "recordings":
            return _json(PAGE_NOT_FOUND_BODY, 404)
        if request.method not in ("GET", "HEAD"):
            return _json(METHOD_NOT_ALLOWED_BODY, 405, {"Allow": "GET, HEAD"})
        if len(parts) == 3:
            try:
                return self._list(request)
            except _BadParameter as exc:
                source = {"parameter": exc.parameter}
                return _json(_errors("10015", "Invalid parameter", exc.detail, source=source), 400)
        rec = self.get_recording(parts[3])
        if rec is None:
            return _json(NOT_FOUND_BODY, 404)
        return _json({"data": rec.resource(rec.download_urls())}, 200)

    def _list(self, request: Request) -> Response:
        args = request.args
        page_number = _int_param(args, "page[number]", 1, minimum=1)
        page_size = _int_param(args, "page[size]", 20, minimum=1, maximum=250)
        if self.max_page_size is not None:
            page_size = min(page_size, self.max_page_size)
        with self._lock:
            self.list_pages_served.append(page_number)
        recs = self.recordings
        for name, value in args.items(multi=True):
            if not name.startswith("filter"):
                continue
            match = _FILTER_RE.fullmatch(name)
            key, op = (match.group(1), match.group(2)) if match else ("", None)
            if key in _EQ_FILTERS and op is None:
                attr = _EQ_FILTERS[key]
                recs = [r for r in recs if getattr(r, attr) == value]
            elif key in _RANGE_FILTERS and op in ("gte", "lte"):
                attr, bound = _RANGE_FILTERS[key], _parse_time(name, value)
                if op == "gte":
                    recs = [r for r in recs if getattr(r, attr) >= bound]
                else:
                    recs = [r for r in recs if getattr(r, attr) <= bound]
            else:
                raise _BadParameter(name, f"unknown filter {name}")
        total = len(recs)
        page = recs[(page_number - 1) * page_size : page_number * page_size]
        items = [r.resource(r.download_urls()) for r in page]
        body = {
            "data": [{"data": item} for item in items] if self.list_wrapped else items,
            "meta": {
                "total_pages": math.ceil(total / page_size),
                "total_results": total,
                "page_number": page_number,
                "page_size": page_size,
            },
        }
        return _json(body, 200)


# -- webhooks ---------------------------------------------------------------------------------


def recording_saved_body(
    rec: EmulatedRecording | None = None,
    *,
    event_id: str | None = None,
    attempt: int = 1,
    include_recording_id: bool = True,
    call_session_id: str | None = None,
    event_type: str = "call.recording.saved",
) -> bytes:
    """The compact JSON bytes of a ``call.recording.saved`` webhook (providers.md §1.1).

    With ``rec`` the ids, times and freshly presigned ``recording_urls`` come from it (it must
    belong to an emulator); without it they are random and the URLs point at example.invalid.
    ``call_session_id`` overrides the payload's.
    """
    now = datetime.now(UTC)
    if rec is not None:
        ids = {
            "call_control_id": rec.call_control_id,
            "call_leg_id": rec.call_leg_id,
            "call_session_id": rec.call_session_id,
            "connection_id": rec.connection_id,
        }
        channels, recording_id = rec.channels, rec.id
        started, ended = rec.recording_started_at, rec.recording_ended_at
        urls = rec.download_urls()
    else:
        recording_id = str(uuid.uuid4())
        ids = {
            "call_control_id": f"v3:{secrets.token_urlsafe(40)}",
            "call_leg_id": str(uuid.uuid4()),
            "call_session_id": str(uuid.uuid4()),
            "connection_id": "1494404757140276705",
        }
        channels = "dual"
        started, ended = now - timedelta(minutes=1), now
        urls = {f: f"http://example.invalid/recordings/{recording_id}.{f}" for f in ("mp3", "wav")}
    if call_session_id is not None:
        ids["call_session_id"] = call_session_id
    payload: dict[str, Any] = {
        **ids,
        "client_state": None,
        "channels": channels,
        "format": "mp3",
    }
    if include_recording_id:
        payload["recording_id"] = recording_id
    payload.update(
        {
            "recording_started_at": iso_us(started),
            "recording_ended_at": iso_us(ended),
            "recording_urls": urls,
            "public_recording_urls": {},
        }
    )
    envelope = {
        "data": {
            "record_type": "event",
            "event_type": event_type,
            "id": event_id or str(uuid.uuid4()),
            "occurred_at": iso_us(now),
            "payload": payload,
        },
        "meta": {"attempt": attempt, "delivered_to": _WEBHOOK_DELIVERED_TO},
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


class TelnyxWebhookSigner:
    """Signs webhook bodies the way Telnyx does (Ed25519 over ``f"{ts}|" + body``, §1.2)."""

    recording_saved_body = staticmethod(recording_saved_body)

    def __init__(self, signing_key: nacl.signing.SigningKey | None = None) -> None:
        self.signing_key = signing_key or nacl.signing.SigningKey.generate()

    @property
    def public_key_b64(self) -> str:
        """Base64 of the 32-byte verify key (what Mission Control shows as the public key)."""
        return base64.b64encode(bytes(self.signing_key.verify_key)).decode()

    def signature(self, body: bytes, timestamp: int) -> str:
        """Base64 of the 64-byte Ed25519 signature over ``f"{timestamp}|".encode() + body``."""
        signed = self.signing_key.sign(f"{timestamp}|".encode() + body)
        return base64.b64encode(signed.signature).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers of a delivery of ``body``; ``timestamp`` defaults to now (Unix s)."""
        ts = int(time.time()) if timestamp is None else timestamp
        return {
            "telnyx-signature-ed25519": self.signature(body, ts),
            "telnyx-timestamp": str(ts),
            "content-type": "application/json",
        }


# -- standalone -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the emulator in the foreground until Ctrl-C (for demos)."""
    parser = argparse.ArgumentParser(prog="python -m emulators.telnyx", description=main.__doc__)
    parser.add_argument("--port", type=int, default=8091, help="0 picks a free port")
    parser.add_argument("--recordings", type=int, default=3, help="recordings to create")
    parser.add_argument("--size", type=int, default=65536, help="mp3 bytes per recording")
    parser.add_argument("--api-key", default="test-telnyx-key")
    parser.add_argument("--url-ttl", type=float, default=600.0, help="presigned URL lifetime, s")
    parser.add_argument("--list-wrapped", action="store_true", help="wrap list items in data")
    args = parser.parse_args(argv)
    emulator = TelnyxEmulator(
        api_key=args.api_key,
        url_ttl_seconds=args.url_ttl,
        list_wrapped=args.list_wrapped,
        port=args.port,
    )
    recs = [emulator.add_recording(size=args.size) for _ in range(args.recordings)]
    with emulator:
        print(f"Telnyx emulator API base: {emulator.base_url}")
        print(f"API key: {emulator.api_key}")
        print("Recordings:")
        for rec in recs:
            print(f"  {rec.id}  call_session_id={rec.call_session_id}")
        auth = f"Authorization: Bearer {emulator.api_key}"
        print(f"Try: curl -H '{auth}' {emulator.base_url}/recordings")
        print("Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
