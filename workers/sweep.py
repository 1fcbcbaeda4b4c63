"""The sweeper: publish every ledger row that needs a worker and has no live message."""

from __future__ import annotations

import logging
from datetime import timedelta

from ledger import rows_to_publish
from workers.runtime import Runtime

__all__ = ["sweep"]

logger = logging.getLogger(__name__)

MAX_BATCHES = 20  # bounded work per run; the next run continues


def sweep(runtime: Runtime, batch_size: int = 500) -> int:
    """Publish due, unpublished and stuck rows; return how many were published.

    A published row still waiting past the lease counts as lost only as far as its lane's
    queue cannot account for it (``rows_to_publish``): behind a deep backlog its message is
    still queued, and a copy per lease period would only grow the backlog.
    """
    settings = runtime.settings
    stuck_after = timedelta(seconds=settings.stuck_after_seconds)
    grace = timedelta(seconds=min(10, 2 * settings.sweep_interval_seconds))
    published = 0
    for _batch in range(MAX_BATCHES):
        # Read before every batch: the previous batch's messages are in the queue now.
        queued = runtime.queue_depths() if runtime.queue_depths is not None else None
        ids = rows_to_publish(runtime.sessions, stuck_after, grace, batch_size, queued)
        if not ids:
            break
        sent = runtime.publish(ids)
        published += len(sent)
        if len(sent) < len(ids) or len(ids) < batch_size:
            break
    if published:
        logger.info("sweeper published %s ledger rows", published)
    _clean_partials(runtime)
    return published


def _clean_partials(runtime: Runtime) -> None:
    """Abort multipart uploads (remove temp files) older than the claim lease.

    A capture that failed while the storage was down could not abort its upload, and a child
    killed at the time limit never tries. This is the only periodic clean-up (a worker's start
    does none: it would only delay the worker while the storage is down). Older than the lease
    is safe: an attempt never outlives the task time limit.
    """
    try:
        removed = runtime.storage.clean_partials(runtime.settings.stuck_after_seconds)
    except Exception as exc:  # the storage may still be down: the next sweep tries again
        logger.warning("sweeper could not clean partial writes (%s)", type(exc).__name__)
        return
    if removed:
        logger.info("sweeper removed %s partial writes of interrupted captures", removed)
