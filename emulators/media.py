"""S3-style presigned, expiring audio URLs and the ``/media/{id}.{ext}`` route that serves them.

Presigned URLs: ``X-Amz-Date`` has second resolution and ``X-Amz-Expires`` is ``ceil(ttl)`` as
S3 writes them, but the exact expiry (ms) is carried in the first 16 hex digits of the 64-hex
``X-Amz-Signature`` (the rest is an HMAC over the path and every other query parameter), so a
0.5 s TTL expires 0.5 s after issue. Any edit of the URL → 403 ``AccessDenied``; past its TTL
→ 403 ``Request has expired``. Serving: single ``Range`` (206, 416), ``Accept-Ranges: bytes``,
``ETag``, the body streamed from an :class:`~emulators.audio.AudioSource`, and the audio faults
of :mod:`emulators.base`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import quote, urlencode

from werkzeug.wrappers import Request, Response

from emulators.audio import AudioSource
from emulators.base import Fault

__all__ = [
    "MediaFile",
    "PresignedMedia",
    "iso_ms",
    "ranged_response",
    "stream_range",
    "xml_error",
]

STREAM_CHUNK = 256 * 1024  # fewer socket writes: ~450 MB/s on loopback vs ~380 at 64 KiB
_MEDIA_RE = re.compile(r"/media/([^/]+)\.(\w+)")
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")

StreamFn = Callable[[AudioSource, int, int, "int | None"], Iterator[bytes]]


class MediaFile(NamedTuple):
    """What one media URL serves."""

    source: AudioSource
    content_type: str
    last_modified: datetime


def iso_ms(dt: datetime) -> str:
    """``2018-02-02T22:25:27.521Z``."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def xml_error(status: int, code: str, message: str, **extra: str) -> Response:
    """An S3-style XML error document."""
    fields = {"Code": code, "Message": message, **extra, "RequestId": secrets.token_hex(8).upper()}
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    text = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'
    return Response(text, status=status, content_type="application/xml")


def stream_range(source: AudioSource, start: int, end: int, limit: int | None) -> Iterator[bytes]:
    """The bytes of ``[start, end)``; only the first ``limit`` of them when ``limit`` is set."""
    sent = 0
    for chunk in source.iter_bytes(start, end, chunk_size=STREAM_CHUNK):
        if limit is not None and sent + len(chunk) >= limit:
            if limit > sent:
                yield chunk[: limit - sent]
            return
        sent += len(chunk)
        yield chunk


class PresignedMedia:
    """Signs ``/media/{id}.{ext}`` URLs with a per-instance secret and serves them."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._expired_early: set[str] = set()  # signatures an "expire_mid" fault spent

    def presign(self, root_url: str, media_id: str, ext: str, ttl: float) -> str:
        """A URL under ``root_url`` for ``media_id``'s audio, valid ``ttl`` seconds."""
        now = time.time()
        expires_ms = round((now + ttl) * 1000)
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        params = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"ASIAEMULATOR/{amz_date[:8]}/us-east-1/s3/aws4_request",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(math.ceil(ttl)),
            "X-Amz-SignedHeaders": "host",
        }
        path = f"/media/{quote(media_id, safe='')}.{ext}"
        mac = self._mac(f"/media/{media_id}.{ext}", params, expires_ms)
        params["X-Amz-Signature"] = f"{expires_ms:016x}{mac}"
        return f"{root_url}{path}?{urlencode(params)}"

    def _mac(self, path: str, params: dict[str, str], expires_ms: int) -> str:
        canonical = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        message = f"{path}\n{canonical}\n{expires_ms}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:48]

    @staticmethod
    def expires_ms(request: Request) -> int | None:
        """When the request's URL expires (unix ms), None if it carries no well-formed signature.

        Not verified: :meth:`check` does that.
        """
        signature = request.args.get("X-Amz-Signature", "")
        return int(signature[:16], 16) if re.fullmatch(r"[0-9a-f]{64}", signature) else None

    def check(self, request: Request) -> Response | None:
        """None when the URL is intact and unexpired, else the S3 403."""
        params = {k: v for k, v in request.args.items() if k != "X-Amz-Signature"}
        signature = request.args.get("X-Amz-Signature", "")
        expires_ms = self.expires_ms(request)
        if expires_ms is None:
            return xml_error(403, "AccessDenied", "Access Denied")
        expected = self._mac(request.path, params, expires_ms)
        if not hmac.compare_digest(expected, signature[16:]):
            return xml_error(403, "AccessDenied", "Access Denied")
        if time.time() * 1000 > expires_ms or signature in self._expired_early:
            return expired(request, expires_ms / 1000)
        return None

    def serve(
        self,
        request: Request,
        fault: Fault | None,
        find: Callable[[str, str], MediaFile | None],
        stream: StreamFn = stream_range,
    ) -> Response:
        """Answer ``GET|HEAD /media/{id}.{ext}``: faults, signature, then the (ranged) body.

        ``find(id, ext)`` names the file or None (404 ``NoSuchKey``).
        """
        match = _MEDIA_RE.fullmatch(request.path)
        if match is None:
            return xml_error(404, "NoSuchKey", "The specified key does not exist.")
        truncate_after: int | None = None
        if fault is not None:
            if fault.kind == "expired":
                return expired(request, time.time())
            if fault.kind == "slow":
                time.sleep(float(fault.opts.get("seconds", 1.0)))
            elif fault.kind in ("truncate", "expire_mid", "cut_chunked"):
                truncate_after = fault.opts.get("after_bytes", -1)
            elif fault.kind == "trickle":
                stream = _trickled(stream, float(fault.opts.get("seconds", 1.0)))
            else:
                return _fault_error(fault)
        denied = self.check(request)
        if denied is not None:
            return denied
        if request.method not in ("GET", "HEAD"):
            return xml_error(405, "MethodNotAllowed", "The specified method is not allowed.")
        media = find(match.group(1), match.group(2))
        if media is None:
            return xml_error(404, "NoSuchKey", "The specified key does not exist.")
        if fault is not None and fault.kind == "expire_mid":
            self._expired_early.add(request.args.get("X-Amz-Signature", ""))
        if fault is not None and fault.kind == "cut_chunked":
            return _cut_chunked_response(media, truncate_after, stream)
        return ranged_response(request, media, truncate_after, stream)


def expired(request: Request, expired_at: float) -> Response:
    """S3's 403 for a presigned URL past its expiry."""
    return xml_error(
        403,
        "AccessDenied",
        "Request has expired",
        **{
            "X-Amz-Expires": request.args.get("X-Amz-Expires", "0"),
            "Expires": iso_ms(datetime.fromtimestamp(expired_at, UTC)),
            "ServerTime": iso_ms(datetime.now(UTC)),
        },
    )


_TRICKLE_STEPS = 40  # a trickled body arrives in this many pieces


def _trickled(stream: StreamFn, seconds: float) -> StreamFn:
    """``stream`` spread over ``seconds``: the body in ``_TRICKLE_STEPS`` pieces, paced."""

    def paced(source: AudioSource, start: int, end: int, limit: int | None) -> Iterator[bytes]:
        piece = max(1, (end - start) // _TRICKLE_STEPS)
        for chunk in stream(source, start, end, limit):
            for offset in range(0, len(chunk), piece):
                yield chunk[offset : offset + piece]
                time.sleep(seconds / _TRICKLE_STEPS)

    return paced


class BodyCut(Exception):
    """Raised inside a chunked body to make the server drop the connection mid-stream."""


def _cut_chunked_response(media: MediaFile, after_bytes: int | None, stream: StreamFn) -> Response:
    """A 200 without ``Content-Length`` (so chunked) whose connection closes after
    ``after_bytes`` (default half) without the terminating chunk: werkzeug drops the connection
    when the body iterator raises once the headers are out."""
    size = media.source.size
    limit = size // 2 if after_bytes is None or after_bytes < 0 else min(after_bytes, size)

    def body() -> Iterator[bytes]:
        yield from stream(media.source, 0, size, limit)
        raise BodyCut("cut_chunked fault: connection dropped mid-body")

    headers = {"Content-Type": media.content_type}
    return Response(body(), status=200, headers=headers, direct_passthrough=True)


def _fault_error(fault: Fault) -> Response:
    if fault.kind == "429":
        response = xml_error(429, "SlowDown", "Please reduce your request rate.")
        response.headers["Retry-After"] = str(fault.opts.get("retry_after", 1))
        return response
    if fault.kind == "500":
        return xml_error(
            500, "InternalError", "We encountered an internal error. Please try again."
        )
    return xml_error(503, "ServiceUnavailable", "Please reduce your request rate.")


def ranged_response(
    request: Request,
    media: MediaFile,
    truncate_after: int | None = None,
    stream: StreamFn = stream_range,
) -> Response:
    """The media's body: 200, or 206 for one satisfiable ``Range`` (416 otherwise), always with
    ``Content-Length`` and ``Accept-Ranges``; ``truncate_after`` cuts the body short (a fault).
    """
    source = media.source
    size = source.size
    start, end, status = 0, size, 200
    headers = {
        "Content-Type": media.content_type,
        "Accept-Ranges": "bytes",
        "ETag": f'"{hashlib.md5(source.seed.encode(), usedforsecurity=False).hexdigest()}"',
        "Last-Modified": media.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
    range_match = _RANGE_RE.fullmatch(request.headers.get("Range", "").strip())
    if range_match and (range_match.group(1) or range_match.group(2)):
        first, last = range_match.group(1), range_match.group(2)
        if first:
            start = int(first)
            end = min(int(last) + 1, size) if last else size
        else:  # suffix range: the last N bytes
            start = max(0, size - int(last))
        if start >= size or start >= end:
            response = xml_error(416, "InvalidRange", "The requested range is not satisfiable")
            response.headers["Content-Range"] = f"bytes */{size}"
            return response
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    length = end - start
    headers["Content-Length"] = str(length)
    limit = None
    if truncate_after is not None:
        limit = length // 2 if truncate_after < 0 else min(truncate_after, length)
    # A lazy iterable keeps our Content-Length; werkzeug sends no body for HEAD.
    body = stream(source, start, end, limit)
    return Response(body, status=status, headers=headers, direct_passthrough=True)
