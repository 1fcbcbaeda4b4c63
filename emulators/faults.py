"""Injectable faults for emulators: a thread-safe FIFO of (kind, options) per target.

Provider-neutral (the Twilio emulator uses it; the Telnyx emulator keeps its own equivalent and
can move here). A fault queued ``times`` times answers that many requests, then is gone.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fault", "FaultQueue"]


@dataclass
class Fault:
    kind: str
    remaining: int
    opts: dict[str, Any] = field(default_factory=dict)


class FaultQueue:
    """Faults per target, each target allowing only the kinds named in ``kinds``."""

    def __init__(self, kinds: Mapping[str, Iterable[str]]) -> None:
        self._kinds = {target: frozenset(names) for target, names in kinds.items()}
        self._queues: dict[str, deque[Fault]] = {target: deque() for target in kinds}
        self._lock = threading.Lock()

    def add(self, target: str, kind: str, times: int = 1, **opts: Any) -> None:
        if kind not in self._kinds.get(target, frozenset()):
            raise ValueError(f"fault {kind!r} does not apply to {target!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._queues[target].append(Fault(kind, times, dict(opts)))

    def take(self, target: str) -> Fault | None:
        """The fault answering this request to ``target``, if any (consumes one use)."""
        with self._lock:
            pending = self._queues[target]
            head = pending[0] if pending else None
            if head is not None:
                head.remaining -= 1
                if not head.remaining:
                    pending.popleft()
            return head

    def clear(self) -> None:
        with self._lock:
            for pending in self._queues.values():
                pending.clear()
