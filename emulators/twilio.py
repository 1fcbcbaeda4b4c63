"""A real HTTP emulator of Twilio's Recordings API, and a recording-status-callback sender.

What it serves (one loopback port; providers.md §5):

- ``GET /2010-04-01/Accounts/{AC}/Recordings.json``: the list, newest first, ``PageSize``
  (1..1000, default 50) and ``Page``/``PageToken`` paging through ``next_page_uri``; filters
  ``CallSid``, ``DateCreated`` (a day), ``DateCreated>`` / ``DateCreated<`` (sent as
  ``DateCreated>=…``/``DateCreated<=…``: a date or an ISO datetime, inclusive).
- ``GET /2010-04-01/Accounts/{AC}/Recordings/{RE}.json``: the recording resource.
- ``GET|HEAD /2010-04-01/Accounts/{AC}/Recordings/{RE}[.wav|.mp3]``: the media (no extension
  is wav), ``Content-Length``, single ``Range``; an encrypted recording refuses mp3 (16109).

Every route needs HTTP Basic with the Account SID and auth token (the "HTTP auth on media"
account setting on). Errors are Twilio's ``{"code","message","more_info","status"}``; a 429 is
error 20429 with ``Retry-After``. Faults (:meth:`TwilioEmulator.inject`) fire on the next
requests to ``api`` or ``media`` before the auth check; ``redirect`` answers media with a 307
to ``location`` (default: the same media on ``localhost`` instead of ``127.0.0.1``, another
host, so credentials must not follow). Each request is logged with whether it carried the
right credentials.

:class:`TwilioCallbackSigner` builds the form body Twilio posts and signs it as Twilio does.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

from emulators.audio import MP3_PREFIX, AudioSource, wav_header
from emulators.base import Emulator, Fault, json_response
from emulators.media import MediaFile, ranged_response
from providers.signing import twilio_signature

__all__ = [
    "EmulatedRecording",
    "TwilioCallbackSigner",
    "TwilioEmulator",
    "callback_params",
    "new_sid",
]

logger = logging.getLogger(__name__)

MIME_TYPES = {"mp3": "audio/mpeg", "wav": "audio/x-wav"}
FAULT_KINDS = {
    "api": frozenset({"429", "500", "503"}),
    "media": frozenset({"429", "500", "503", "redirect"}),
}
FAULT_OPTIONS = {"429": frozenset({"retry_after"}), "redirect": frozenset({"location"})}
_PATH = re.compile(
    r"/2010-04-01/Accounts/(?P<account>AC[0-9a-f]{32})/Recordings"
    r"(?:/(?P<sid>RE[0-9a-f]{32})(?P<ext>\.json|\.wav|\.mp3)?|(?P<list>\.json))"
)
_ERRORS = {
    401: (20003, "Authenticate"),
    404: (20404, "The requested resource {path} was not found"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two letters and 32 lower-case hex digits."""
    return prefix + secrets.token_hex(16)


def rfc2822(moment: datetime) -> str:
    """``Fri, 14 Oct 2016 21:56:34 +0000``, the API's date format."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def error_body(status: int, path: str = "", code: int | None = None, message: str = "") -> bytes:
    default_code, default_message = _ERRORS.get(status, (20000 + status, "Error"))
    code = code or default_code
    body = {
        "code": code,
        "message": message or default_message.format(path=path),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return json.dumps(body).encode()


@dataclass
class EmulatedRecording:
    """One recording; ``size`` is the wav size, mp3 is a quarter of it."""

    sid: str
    account_sid: str
    call_sid: str
    status: str
    channels: int
    duration: int
    start_time: datetime
    date_created: datetime
    seed: str
    size: int
    error_code: int | None = None
    encrypted: bool = False
    source: str = "RecordDial"
    track: str = "both"
    conference_sid: str | None = None
    _audio: dict[str, AudioSource] = field(default_factory=dict, repr=False, compare=False)

    def audio(self, fmt: str = "wav") -> AudioSource:
        """The bytes served as ``fmt``."""
        if fmt not in self._audio:
            if fmt == "wav":
                prefix = wav_header(self.size, self.channels)
                source = AudioSource(self.size, f"{self.seed}:wav", prefix)
            else:
                source = AudioSource(max(self.size // 4, 1), f"{self.seed}:mp3", MP3_PREFIX)
            self._audio[fmt] = source
        return self._audio[fmt]

    @property
    def path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Recordings/{self.sid}"

    def resource(self, media_base: str) -> dict[str, Any]:
        """The 2010-04-01 Recording JSON object."""
        ready = self.status == "completed"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "call_sid": self.call_sid,
            "conference_sid": self.conference_sid,
            "date_created": rfc2822(self.date_created),
            "date_updated": rfc2822(self.date_created),
            "start_time": rfc2822(self.start_time),
            "duration": str(self.duration) if ready else "-1",
            "sid": self.sid,
            "price": "-0.0025" if ready else None,
            "price_unit": "USD",
            "status": self.status,
            "channels": self.channels,
            "source": self.source,
            "track": self.track,
            "error_code": self.error_code,
            "uri": f"{self.path}.json",
            "encryption_details": (
                {"type": "rsa-aes", "public_key_sid": new_sid("CR"), "encrypted_cek": "Zm9v"}
                if self.encrypted
                else None
            ),
            "subresource_uris": {
                "add_on_results": f"{self.path}/AddOnResults.json",
                "transcriptions": f"{self.path}/Transcriptions.json",
            },
            "media_url": f"{media_base}{self.path}",
        }


class TwilioEmulator(Emulator):
    """Twilio's Recordings API and media on one loopback port (thread-safe): ``start()`` /
    ``stop()`` or ``with``. Fault targets are ``api`` and ``media`` (see the module doc)."""

    fault_kinds = FAULT_KINDS
    fault_options = FAULT_OPTIONS

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self._recordings: dict[str, EmulatedRecording] = {}
        self._clock = itertools.count()

    @property
    def base_url(self) -> str:
        """The API base (``CALLREC_TWILIO_API_BASE``), ``http://127.0.0.1:PORT``."""
        return self.url

    def settings_env(self) -> dict[str, str]:
        """The ``CALLREC_TWILIO_*`` settings that point callrec at this emulator."""
        return {
            "CALLREC_TWILIO_ACCOUNT_SID": self.account_sid,
            "CALLREC_TWILIO_AUTH_TOKEN": self.auth_token,
            "CALLREC_TWILIO_API_BASE": self.base_url,
            "CALLREC_TWILIO_AUDIO_HOSTS": self.audio_host,
        }

    # -- recordings ---------------------------------------------------------------------------
    def add_recording(
        self,
        *,
        call_sid: str | None = None,
        size: int = 64_000,
        channels: int = 1,
        duration: int = 4,
        status: str = "completed",
        error_code: int | None = None,
        encrypted: bool = False,
        date_created: datetime | None = None,
    ) -> EmulatedRecording:
        """Add a recording; without ``date_created`` each one is a second newer than the last."""
        created = date_created or datetime.now(UTC).replace(microsecond=0) + timedelta(
            seconds=next(self._clock)
        )
        sid = new_sid("RE")
        rec = EmulatedRecording(
            sid=sid,
            account_sid=self.account_sid,
            call_sid=call_sid or new_sid("CA"),
            status=status,
            channels=channels,
            duration=duration,
            start_time=created - timedelta(seconds=duration),
            date_created=created,
            seed=sid,
            size=size,
            error_code=error_code,
            encrypted=encrypted,
        )
        with self._lock:
            self._recordings[sid] = rec
        return rec

    def set_status(self, sid: str, status: str, error_code: int | None = None) -> None:
        with self._lock:
            self._recordings[sid].status = status
            self._recordings[sid].error_code = error_code

    def remove_recording(self, sid: str) -> None:
        with self._lock:
            self._recordings.pop(sid, None)

    # -- WSGI ---------------------------------------------------------------------------------
    def crash_response(self) -> Response:
        return self._error(500)

    def is_authorized(self, request: Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode())
        return scheme.lower() == "basic" and hmac.compare_digest(encoded.encode(), expected)

    @staticmethod
    def _error(status: int, path: str = "", **kwargs: Any) -> Response:
        return Response(
            error_body(status, path, **kwargs), status=status, content_type="application/json"
        )

    def _fault_response(self, fault: Fault, request: Request) -> Response | None:
        if fault.kind == "redirect":
            default = request.url.replace("127.0.0.1", "localhost", 1)
            return Response(
                b"", status=307, headers={"Location": fault.opts.get("location", default)}
            )
        response = self._error(int(fault.kind))
        if fault.kind == "429":
            response.headers["Retry-After"] = str(fault.opts.get("retry_after", 1))
        return response

    def dispatch(self, request: Request) -> Response:
        match = _PATH.fullmatch(request.path)
        if match is None:
            return self._error(404, request.path)
        is_media = match.group("sid") is not None and match.group("ext") != ".json"
        fault = self.take_fault("media" if is_media else "api", request.method)
        if fault is not None:
            faulty = self._fault_response(fault, request)
            if faulty is not None:
                return faulty
        if not self.is_authorized(request) or match.group("account") != self.account_sid:
            response = self._error(401)
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        if request.method not in ("GET", "HEAD"):
            return self._error(405, message="Method not allowed")
        if match.group("list"):
            return self._list(request)
        with self._lock:
            rec = self._recordings.get(match.group("sid"))
        if rec is None:
            return self._error(404, request.path)
        if not is_media:
            return json_response(rec.resource(self.base_url), 200)
        return self._media(request, rec, (match.group("ext") or ".wav")[1:])

    def _media(self, request: Request, rec: EmulatedRecording, fmt: str) -> Response:
        if rec.status != "completed":
            return self._error(404, request.path)
        if rec.encrypted and fmt == "mp3":
            message = "Encrypted recordings can only be fetched as wav"
            return self._error(400, code=16109, message=message)
        return ranged_response(
            request, MediaFile(rec.audio(fmt), MIME_TYPES[fmt], rec.date_created)
        )

    def _list(self, request: Request) -> Response:
        args = request.args
        try:
            page_size = min(max(int(args.get("PageSize", "50")), 1), 1000)
            page = max(int(args.get("Page", "0")), 0)
            recs = _filtered(self._snapshot(), args)
        except ValueError as exc:
            return self._error(400, code=20001, message=str(exc)[:200])
        chunk = recs[page * page_size : (page + 1) * page_size]
        base = f"/2010-04-01/Accounts/{self.account_sid}/Recordings.json"
        keep = [(k, v) for k, v in args.items(multi=True) if k not in ("Page", "PageToken")]

        def page_uri(number: int, token: str | None = None) -> str:
            params = (
                [*keep, ("Page", str(number))]
                if "PageSize" in args
                else [*keep, ("PageSize", str(page_size)), ("Page", str(number))]
            )
            if token:
                params.append(("PageToken", token))
            return f"{base}?{urlencode(params)}"

        more = (page + 1) * page_size < len(recs)
        return json_response(
            {
                "first_page_uri": page_uri(0),
                "end": page * page_size + max(len(chunk) - 1, 0),
                "previous_page_uri": page_uri(page - 1) if page else None,
                "recordings": [rec.resource(self.base_url) for rec in chunk],
                "uri": page_uri(page),
                "page_size": page_size,
                "start": page * page_size,
                "next_page_uri": page_uri(page + 1, f"PA{chunk[-1].sid}") if more else None,
                "page": page,
            },
            200,
        )

    def _snapshot(self) -> list[EmulatedRecording]:
        with self._lock:
            recs = list(self._recordings.values())
        return sorted(recs, key=lambda r: (r.date_created, r.sid), reverse=True)


def _moment(name: str, raw: str, end_of_day: bool) -> datetime:
    try:
        if len(raw) == 10:  # YYYY-MM-DD: the whole day
            day = datetime.fromisoformat(raw).replace(tzinfo=UTC)
            return day + timedelta(days=1, seconds=-1) if end_of_day else day
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"Invalid {name}: {raw[:40]}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filtered(recs: list[EmulatedRecording], args: Any) -> list[EmulatedRecording]:
    if "CallSid" in args:
        recs = [r for r in recs if r.call_sid == args["CallSid"]]
    if "DateCreated>" in args:
        low = _moment("DateCreated>", args["DateCreated>"], end_of_day=False)
        recs = [r for r in recs if r.date_created >= low]
    if "DateCreated<" in args:
        high = _moment("DateCreated<", args["DateCreated<"], end_of_day=True)
        recs = [r for r in recs if r.date_created <= high]
    if "DateCreated" in args:
        day = _moment("DateCreated", args["DateCreated"], end_of_day=False).date()
        recs = [r for r in recs if r.date_created.date() == day]
    return recs


# -- callbacks --------------------------------------------------------------------------------


def callback_params(
    rec: EmulatedRecording,
    media_base: str = "https://api.twilio.com",
    *,
    status: str | None = None,
    error_code: int | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> list[tuple[str, str]]:
    """The parameters Twilio posts to ``recordingStatusCallback`` (providers.md §5.1), in the
    order Twilio writes them; ``extra`` adds fields (other products, future ones)."""
    status = status or rec.status
    code = error_code if error_code is not None else rec.error_code
    params = [
        ("AccountSid", rec.account_sid),
        ("CallSid", rec.call_sid),
        ("RecordingSid", rec.sid),
        ("RecordingUrl", f"{media_base}{rec.path}"),
        ("RecordingStatus", status),
        ("RecordingDuration", str(rec.duration) if status == "completed" else "0"),
        ("RecordingChannels", str(rec.channels)),
        ("RecordingStartTime", rfc2822(rec.start_time)),
        ("RecordingSource", rec.source),
        ("RecordingTrack", rec.track),
        ("ErrorCode", str(code or 0)),
    ]
    return [*params, *extra]


class TwilioCallbackSigner:
    """Signs form callbacks exactly as Twilio does, for the public URL Twilio would call."""

    def __init__(self, auth_token: str) -> None:
        self.auth_token = auth_token

    def signature(self, url: str, params: Sequence[tuple[str, str]]) -> str:
        return twilio_signature(self.auth_token, url, params)

    def sign(self, url: str, params: Sequence[tuple[str, str]]) -> tuple[bytes, dict[str, str]]:
        """``(body, headers)`` of the POST Twilio sends to ``url``."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": self.signature(url, params),
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        return urlencode(params).encode(), headers


def main(argv: list[str] | None = None) -> None:
    """``python -m emulators.twilio --port 8092 --recordings 3``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m emulators.twilio", description=__doc__)
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument("--recordings", type=int, default=3)
    args = parser.parse_args(argv)
    emulator = TwilioEmulator(port=args.port).start()
    for _ in range(args.recordings):
        emulator.add_recording()
    for name, value in emulator.settings_env().items():
        print(f"{name}={value}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":
    main()
