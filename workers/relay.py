"""The relay: publishes a capture wake-up for every newly accepted ledger row.

The web process only commits rows (the ledger is the outbox) and never waits on the broker:
a publish to a down broker can hang (celery#4296), and publishing from the request measured
0.36x the bare route. This loop, run as its own process (``callrec relay``), picks up rows that
were never published and publishes them, then waits ``CALLREC_RELAY_INTERVAL_SECONDS``
before it looks again unless its batch was full (a backlog: it goes on at once). Rows accepted
during the wait go out together, so under a steady stream of webhooks one round publishes many
rows for the cost of one (its ledger reads and write, one broker round trip); looking again at
once published a handful per round and cost more CPU than the web process's whole accept
(bench/receiver.py's CPU columns). A new row waits about one interval, as it did when the
relay was idle. Several relays may run: a row published twice is absorbed by
the ledger claim. If no relay runs, the beat sweeper still publishes such rows after a grace.
"""

from __future__ import annotations

import logging
import threading

from ledger import unpublished_rows
from workers.runtime import Runtime

__all__ = ["relay"]

logger = logging.getLogger(__name__)

BATCH = 500
BROKER_ERROR_PAUSE_SECONDS = 2.0


def relay(runtime: Runtime, stop: threading.Event, max_rounds: int | None = None) -> int:
    """Publish until ``stop`` is set (or ``max_rounds`` loops ran); return rows published."""
    interval = runtime.settings.relay_interval_seconds
    published = 0
    rounds = 0
    while not stop.is_set() and (max_rounds is None or rounds < max_rounds):
        rounds += 1
        try:
            ids = unpublished_rows(runtime.sessions, BATCH)
        except Exception as exc:  # the ledger is down: wait, never die
            logger.warning("relay cannot read the ledger (%s)", type(exc).__name__)
            stop.wait(BROKER_ERROR_PAUSE_SECONDS)
            continue
        if not ids:
            stop.wait(interval)
            continue
        sent = runtime.publish(ids)
        published += len(sent)
        if len(sent) < len(ids):  # the broker refused: back off, the rows stay unpublished
            stop.wait(BROKER_ERROR_PAUSE_SECONDS)
        elif len(ids) < BATCH:  # caught up: let the next rows gather
            stop.wait(interval)
    return published
