"""Publish capture wake-ups off the request path.

The webhook view commits the ledger row and hands the id to this relay; a background thread
publishes it to the broker and records ``enqueued_at`` in batches. The request never waits on
the broker (a publish to a down broker can hang, celery#4296), and a webhook acknowledged
just before the process dies is not lost: its row is in the ledger, unpublished, and the
sweeper publishes it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable

from sqlalchemy.orm import Session, sessionmaker

from ledger.publish import SendCapture, publish_and_record

__all__ = ["Relay"]

logger = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
BATCH = 256


class Relay:
    def __init__(self, send: SendCapture, sessions: sessionmaker[Session]) -> None:
        self._send = send
        self._sessions = sessions
        self._queue: queue.Queue[int | None] = queue.Queue(QUEUE_LIMIT)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, ids: Iterable[int]) -> None:
        """Queue ids for publishing; never blocks (when full, the sweeper catches up)."""
        self._ensure_thread()
        for recording_id in ids:
            try:
                self._queue.put_nowait(recording_id)
            except queue.Full:
                logger.warning("relay queue full; recording %s left to the sweeper", recording_id)

    def _ensure_thread(self) -> None:
        # Started lazily, in the process that serves requests (after gunicorn forks).
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="callrec-relay", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._publish(batch)
                    return
                batch.append(item)
            self._publish(batch)

    def _publish(self, batch: list[int]) -> None:
        publish_and_record(self._send, self._sessions, batch)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish what is queued, then stop the thread (bounded by ``timeout``)."""
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put(None, timeout=timeout)
            except queue.Full:
                return
            self._thread.join(timeout)
