"""A Telnyx emulator whose audio bodies arrive at a set rate and report their progress, so a
fault test can act at a chosen point of a download (kill the process streaming it at 40 %).

Each audio GET is a :class:`Stream`: the recording, the client's TCP port (which names the
process holding the connection, ``tests.faults.processes.pid_holding``), bytes sent and total.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request

from emulators.audio import AudioSource
from emulators.media import StreamFn, stream_range
from emulators.telnyx import TelnyxEmulator

__all__ = ["PacedTelnyxEmulator", "Stream"]

_PIECE = 64 * 1024  # the largest step: small enough to stop anywhere in a 5 MiB part


@dataclass
class Stream:
    """One audio response in flight or done."""

    recording_id: str
    client_port: int
    #: Bytes per second (None: full speed); a test may change it while the body streams.
    rate: float | None = None
    total: int = 0
    sent: int = 0
    finished: bool = False

    @property
    def fraction(self) -> float:
        return self.sent / self.total if self.total else 0.0


class PacedTelnyxEmulator(TelnyxEmulator):
    """``TelnyxEmulator`` whose audio goes out at ``bytes_per_second`` (None: unpaced).

    Each response starts at the rate set then (``Stream.rate``), so a test can slow the first
    download, let the next ones run at full speed, and release the first when it chooses.
    """

    def __init__(self, bytes_per_second: float | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bytes_per_second = bytes_per_second
        self._streams: list[Stream] = []
        self._streams_lock = threading.Lock()

    def streams(self, recording_id: str | None = None) -> list[Stream]:
        """Audio responses so far, oldest first (only ``recording_id``'s when given)."""
        with self._streams_lock:
            return [s for s in self._streams if recording_id in (None, s.recording_id)]

    def audio_stream(self, request: Request) -> StreamFn:
        name = request.path.rsplit("/", 1)[-1]
        port = int(request.environ.get("REMOTE_PORT", 0))
        stream = Stream(name.rpartition(".")[0], port, self.bytes_per_second)
        with self._streams_lock:
            self._streams.append(stream)

        def body(source: AudioSource, start: int, end: int, limit: int | None) -> Iterator[bytes]:
            stream.total = end - start
            for chunk in stream_range(source, start, end, limit):
                offset = 0
                while offset < len(chunk):
                    rate = stream.rate
                    # ~20 pieces a second when paced: a rate change takes effect at once.
                    size = min(_PIECE, max(1024, int(rate / 20))) if rate else _PIECE
                    piece = chunk[offset : offset + size]
                    offset += len(piece)
                    yield piece
                    stream.sent += len(piece)
                    if rate:
                        time.sleep(len(piece) / rate)
            stream.finished = True

        return body
