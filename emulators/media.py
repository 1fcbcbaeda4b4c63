"""Audio as emulators serve it: format headers and a streamed, Range-aware response.

Provider-neutral (the Twilio emulator uses it; the Telnyx emulator has its own copy of the same
ideas and can move here).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from werkzeug.wrappers import Request, Response

from emulators.audio import AudioSource

__all__ = ["MIME_TYPES", "MP3_PREFIX", "audio_response", "wav_prefix"]

MIME_TYPES = {"mp3": "audio/mpeg", "wav": "audio/x-wav"}
MP3_PREFIX = b"ID3\x04\x00\x00\x00\x00\x00\x00"  # an empty ID3v2.4 tag
STREAM_CHUNK = 256 * 1024


def wav_prefix(size: int, channels: int, rate: int = 8000) -> bytes:
    """The 44-byte RIFF/WAVE header of a ``size``-byte 16-bit PCM file."""
    align = channels * 2
    data = max(size - 44, 0)
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        *(b"RIFF", min(data + 36, 0xFFFFFFFF), b"WAVE", b"fmt ", 16, 1, channels),
        *(rate, rate * align, align, 16, b"data", min(data, 0xFFFFFFFF)),
    )


def _chunks(source: AudioSource, start: int, stop: int) -> Iterator[bytes]:
    yield from source.iter_bytes(start, stop, chunk_size=STREAM_CHUNK)


def audio_response(
    request: Request, source: AudioSource, content_type: str, headers: dict[str, str] | None = None
) -> Response:
    """200 with the whole body, 206 for one satisfiable ``Range``, 416 otherwise.

    Always ``Content-Length`` and ``Accept-Ranges: bytes``; the body is generated while it is
    sent (werkzeug sends none for HEAD).
    """
    size = source.size
    out = {"Content-Type": content_type, "Accept-Ranges": "bytes", **(headers or {})}
    start, stop, status = 0, size, 200
    wanted = request.range
    if wanted is not None:
        bounds = wanted.range_for_length(size)
        if bounds is None:
            out["Content-Range"] = f"bytes */{size}"
            return Response(b"", status=416, headers=out)
        (start, stop), status = bounds, 206
        out["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    out["Content-Length"] = str(stop - start)
    return Response(
        _chunks(source, start, stop), status=status, headers=out, direct_passthrough=True
    )
