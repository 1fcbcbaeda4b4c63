"""A client-side request pacer: at most ``rate`` calls per second from one process.

Providers that publish a per-key rate (Quo: 10 requests/s per API key) pace their API calls
with it so one worker never bursts past the limit. It is per process: several worker processes
sharing a key can still exceed it together, and then the provider's 429 takes the usual path
(``RetryLater`` with its ``Retry-After``, else our backoff; see ``providers/http.py``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Pacer"]


class Pacer:
    """Spaces calls ``1/rate`` seconds apart (thread-safe)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> float:
        """Block until this call may go; return how long it waited (seconds)."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        delay = slot - now
        if delay > 0:
            self._sleep(delay)
        return delay
