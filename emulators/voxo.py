"""A real HTTP emulator of VOXO's recordings API (seed ``001``, providers.md §3).

What it serves (one loopback port):

- ``POST /authentication`` ``{"strategy": "local", "email", "password"}`` → 201 with a
  Feathers-style body: ``accessToken`` (an HS256 JWT whose ``exp`` is ``token_ttl_seconds``
  away), ``authentication.payload`` and ``user``. Wrong credentials → 401 ``NotAuthenticated``.
- ``GET /call-reports?recordType=recordings&start&end&tenantId`` with ``Authorization: Bearer``:
  the bare array of call reports whose ``start`` lies in ``[start, end]``, newest first, times as
  Central wall-time strings (``America/Chicago``, DST included). All four parameters are
  required; a span over 2 days (measured on the wall-time strings) is a 400.
- ``GET /call-recordings/{uniqueId}?tenantId&start`` → ``{"uri": …}``, a presigned URL valid
  ``url_ttl_seconds`` (default 60). ``start`` must equal the listed string exactly, else 404.
- ``GET|HEAD /media/{uniqueId}.mp3?X-Amz-…`` — the audio (:mod:`emulators.media`), refused
  with 403 once expired. With ``cut_at_expiry`` (default) a body still streaming when its URL
  expires is cut there, stricter than S3 (which checks only when the request starts).

A missing, forged, expired or revoked (:meth:`VoxoEmulator.revoke_tokens`) token is a 401
``NotAuthenticated``. Errors use the Feathers shape ``{name, message, code, className}``:
VOXO documents no error body (UNCONFIRMED), and its ``strategy: local`` login is Feathers'.

Faults (:meth:`Emulator.inject`): ``"api"`` 429 (``Retry-After``)/500/503/slow; ``"audio"``
as :mod:`emulators.base`, except that ``"slow"`` here spreads the body over ``seconds`` (so a
short URL expires mid-download) instead of waiting before it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from werkzeug.wrappers import Request, Response

from emulators.audio import MP3_PREFIX, AudioSource
from emulators.base import Emulator, Fault
from emulators.base import json_response as _json
from emulators.media import MediaFile, PresignedMedia, StreamFn, stream_range
from emulators.numbers import VOXO_DIALED

__all__ = ["CENTRAL", "MAX_RANGE", "VoxoEmulator", "VoxoRecording", "error_body"]

CENTRAL = ZoneInfo("America/Chicago")
WALL = "%Y-%m-%d %H:%M:%S"
MAX_RANGE = timedelta(days=2)
_CLASS_NAMES = {
    400: ("BadRequest", "bad-request"),
    401: ("NotAuthenticated", "not-authenticated"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "not-found"),
    405: ("MethodNotAllowed", "method-not-allowed"),
    429: ("TooManyRequests", "too-many-requests"),
    500: ("GeneralError", "general-error"),
    503: ("Unavailable", "unavailable"),
}
_PACE_STEPS = 40  # a slow body arrives in this many pieces


def error_body(status: int, message: str) -> dict[str, Any]:
    """A Feathers error: ``{"name", "message", "code", "className", "errors"}``."""
    name, class_name = _CLASS_NAMES[status]
    return {"name": name, "message": message, "code": status, "className": class_name, "errors": {}}


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class VoxoRecording:
    """One recorded (or, with ``recorded=0``, unrecorded) call of the tenant."""

    unique_id: str
    call_report_id: str
    started_at: datetime  # aware
    duration: int
    size: int
    recorded: int = 1
    direction: str = "OUT"
    _audio: AudioSource | None = field(default=None, repr=False, compare=False)

    @property
    def start(self) -> str:
        """The listed ``start``: Central wall time, no offset."""
        return self.started_at.astimezone(CENTRAL).strftime(WALL)

    def audio(self) -> AudioSource:
        """The mp3 bytes served for this recording (``size`` bytes, ID3 header first)."""
        if self._audio is None:
            self._audio = AudioSource(self.size, f"voxo:{self.unique_id}", prefix=MP3_PREFIX)
        return self._audio

    def row(self) -> dict[str, Any]:
        """The call report as the seed draws it (555-01xx numbers are fiction)."""
        return {
            "id": self.call_report_id,
            "start": self.start,
            "callerIdNumber": "1008",
            "callerIdName": "EMULATOR",
            "dialedNum": VOXO_DIALED,
            "direction": self.direction,
            "disposition": "ANSWERED",
            "duration": self.duration,
            "percentJitter": 0,
            "packetLoss": 0,
            "qos": 1,
            "uniqueId": self.unique_id,
            "prevUniqueId": "",
            "whoAnswered": VOXO_DIALED,
            "recorded": self.recorded,
        }


class VoxoEmulator(Emulator):
    """VOXO's authentication, call reports and call recordings on one loopback port."""

    def __init__(
        self,
        email: str = "api@voxo.test",
        password: str = "test-voxo-password",  # noqa: S107  (the emulator's test user)
        tenant_id: int = 37,
        *,
        token_ttl_seconds: float = 3600.0,
        url_ttl_seconds: float = 60.0,
        cut_at_expiry: bool = True,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.email = email
        self.password = password
        self.tenant_id = tenant_id
        self.token_ttl_seconds = token_ttl_seconds
        self.url_ttl_seconds = url_ttl_seconds
        self.cut_at_expiry = cut_at_expiry
        self._media = PresignedMedia()
        self._jwt_secret = secrets.token_bytes(32)
        self._not_before = 0.0  # tokens issued before this are revoked
        self._recordings: dict[str, VoxoRecording] = {}
        self._sequence = 0
        self._windows: list[tuple[str, str]] = []

    @property
    def report_windows(self) -> list[tuple[str, str]]:
        """``(start, end)`` of every call-reports request served so far, in order."""
        with self._lock:
            return list(self._windows)

    @property
    def base_url(self) -> str:
        """The API base (``CALLREC_VOXO_API_BASE``): the server root."""
        return self.url

    def settings_env(self) -> dict[str, str]:
        """The ``CALLREC_VOXO_*`` settings that point callrec at this emulator."""
        return {
            "CALLREC_VOXO_API_BASE": self.base_url,
            "CALLREC_VOXO_EMAIL": self.email,
            "CALLREC_VOXO_PASSWORD": self.password,
            "CALLREC_VOXO_TENANT_ID": str(self.tenant_id),
            "CALLREC_VOXO_AUDIO_HOSTS": self.audio_host,
        }

    # -- recordings -----------------------------------------------------------------------------

    def add_recording(
        self,
        started_at: datetime | None = None,
        *,
        size: int = 32768,
        duration: int = 30,
        recorded: int = 1,
        direction: str = "OUT",
        unique_id: str | None = None,
    ) -> VoxoRecording:
        """A call starting at ``started_at`` (aware; default now) with an Asterisk-style
        ``uniqueId`` (``atl-ast2-<epoch>.<n>``, as the seed's example)."""
        started = (started_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        with self._lock:
            self._sequence += 1
            unique = unique_id or f"atl-ast2-{int(started.timestamp())}.{self._sequence}"
            if unique in self._recordings:
                raise ValueError(f"recording {unique} already exists")
            rec = VoxoRecording(
                unique, secrets.token_hex(16), started, duration, size, recorded, direction
            )
            self._recordings[unique] = rec
        return rec

    def presign(self, unique_id: str, ttl: float | None = None) -> str:
        """A URL for the recording's audio valid ``ttl`` s (default ``url_ttl_seconds``)."""
        ttl = self.url_ttl_seconds if ttl is None else ttl
        return self._media.presign(self.url, unique_id, "mp3", ttl)

    # -- tokens ---------------------------------------------------------------------------------

    def issue_token(self, ttl: float | None = None) -> str:
        """An HS256 JWT for the emulated user, valid ``ttl`` s (default ``token_ttl_seconds``)."""
        now = time.time()
        ttl = self.token_ttl_seconds if ttl is None else ttl
        header = {"alg": "HS256", "typ": "access"}
        payload = {
            "iat": now,
            "exp": now + ttl,
            "aud": "https://api.voxo.co",
            "sub": "1",
            "jti": secrets.token_hex(8),
        }
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
        )
        return f"{signing_input}.{self._sign(signing_input)}"

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (401), whatever its ``exp``."""
        with self._lock:
            self._not_before = time.time()

    def _sign(self, signing_input: str) -> str:
        return _b64url(hmac.new(self._jwt_secret, signing_input.encode(), hashlib.sha256).digest())

    def _token_problem(self, authorization: str) -> str | None:
        """Why the Bearer token is refused, or None when it is valid."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            return "Not authenticated"
        signing_input, _, signature = token.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(signing_input)):
            return "invalid signature"
        encoded = signing_input.partition(".")[2]
        payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        with self._lock:
            revoked = payload["iat"] < self._not_before
        if revoked or time.time() >= payload["exp"]:
            return "jwt expired"
        return None

    # -- WSGI -----------------------------------------------------------------------------------

    def crash_response(self) -> Response:
        return _json(error_body(500, "Internal error"), 500)

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/media/"):
            return self._audio(request, self.take_fault("audio", request.method))
        fault = self.take_fault("api", request.method)
        if fault is not None and fault.kind != "slow":
            headers = {"Retry-After": str(fault.opts.get("retry_after", 1))}
            status = int(fault.kind)
            return _json(error_body(status, "Temporary failure"), status, headers)
        if fault is not None:
            time.sleep(float(fault.opts.get("seconds", 1.0)))
        if request.path == "/authentication":
            return self._authenticate(request)
        routes = {"/call-reports": self._call_reports}
        handler = routes.get(request.path)
        if handler is None and request.path.startswith("/call-recordings/"):
            handler = self._call_recording
        if handler is None:
            return _json(error_body(404, f"Page not found: {request.path[:80]}"), 404)
        if request.method != "GET":
            return _json(error_body(405, f"Method {request.method} is not allowed"), 405)
        problem = self._token_problem(request.headers.get("Authorization", ""))
        if problem is not None:
            return _json(error_body(401, problem), 401)
        return handler(request)

    def _authenticate(self, request: Request) -> Response:
        if request.method != "POST":
            return _json(error_body(405, f"Method {request.method} is not allowed"), 405)
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or body.get("strategy") != "local":
            return _json(error_body(400, "Invalid authentication information"), 400)
        email_ok = hmac.compare_digest(str(body.get("email", "")), self.email)
        password_ok = hmac.compare_digest(str(body.get("password", "")), self.password)
        if not (email_ok and password_ok):
            return _json(error_body(401, "Invalid login"), 401)
        token = self.issue_token()
        encoded = token.split(".")[1]
        payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        body = {
            "accessToken": token,
            "authentication": {"strategy": "local", "accessToken": token, "payload": payload},
            "user": {"id": 1, "email": self.email, "tenantId": self.tenant_id},
        }
        return _json(body, 201)

    def _tenant_problem(self, request: Request) -> Response | None:
        tenant = request.args.get("tenantId", "")
        if not tenant:
            return _json(error_body(400, "tenantId is required"), 400)
        if tenant != str(self.tenant_id):
            return _json(error_body(403, "You do not have access to this tenant"), 403)
        return None

    def _call_reports(self, request: Request) -> Response:
        missing = [n for n in ("recordType", "start", "end") if not request.args.get(n)]
        if missing:
            return _json(error_body(400, f"{', '.join(missing)} required"), 400)
        denied = self._tenant_problem(request)
        if denied is not None:
            return denied
        if request.args["recordType"] != "recordings":
            return _json(error_body(400, "recordType must be recordings"), 400)
        try:
            start, end = (datetime.strptime(request.args[n], WALL) for n in ("start", "end"))
        except ValueError:
            return _json(error_body(400, "start and end must be YYYY-MM-DD HH:MM:SS"), 400)
        if end < start:
            return _json(error_body(400, "end must not be before start"), 400)
        if end - start > MAX_RANGE:
            return _json(error_body(400, "Date range cannot exceed 2 days"), 400)
        with self._lock:
            recordings = list(self._recordings.values())
            self._windows.append((request.args["start"], request.args["end"]))
        rows = [
            rec.row()
            for rec in sorted(recordings, key=lambda r: r.started_at, reverse=True)
            if start <= datetime.strptime(rec.start, WALL) <= end
        ]
        return _json(rows, 200)

    def _call_recording(self, request: Request) -> Response:
        denied = self._tenant_problem(request)
        if denied is not None:
            return denied
        start = request.args.get("start")
        if not start:
            return _json(error_body(400, "start is required"), 400)
        unique_id = request.path.removeprefix("/call-recordings/")
        with self._lock:
            rec = self._recordings.get(unique_id)
        if rec is None or not rec.recorded or start != rec.start:
            return _json(error_body(404, "No recording found for this uniqueId and start"), 404)
        return _json({"uri": self.presign(unique_id)}, 200)

    def _audio(self, request: Request, fault: Fault | None) -> Response:
        pace = None
        if fault is not None and fault.kind == "slow":
            pace, fault = float(fault.opts.get("seconds", 1.0)), None
        expires_ms = self._media.expires_ms(request) if self.cut_at_expiry else None
        return self._media.serve(request, fault, self._media_file, _stream(pace, expires_ms))

    def _media_file(self, unique_id: str, ext: str) -> MediaFile | None:
        with self._lock:
            rec = self._recordings.get(unique_id)
        if rec is None or ext != "mp3" or not rec.recorded:
            return None
        return MediaFile(rec.audio(), "audio/mpeg", rec.started_at)


def _stream(pace_seconds: float | None, expires_ms: int | None) -> StreamFn:
    """A body streamer spreading the bytes over ``pace_seconds`` and stopping (a cut body) once
    the URL's expiry passes."""

    def stream(source: AudioSource, start: int, end: int, limit: int | None) -> Iterator[bytes]:
        piece = max(1, (end - start) // _PACE_STEPS) if pace_seconds else 1 << 30
        pause = pace_seconds / _PACE_STEPS if pace_seconds else 0.0
        for chunk in stream_range(source, start, end, limit):
            for offset in range(0, len(chunk), piece):
                if expires_ms is not None and time.time() * 1000 > expires_ms:
                    return
                yield chunk[offset : offset + piece]
                if pause:
                    time.sleep(pause)

    return stream
