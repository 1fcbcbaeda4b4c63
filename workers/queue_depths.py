"""How many capture wake-ups each lane's queue holds: what the sweeper checks before it calls a
stale row's message lost (``ledger.sweeper.rows_to_publish``).

A passive ``queue_declare`` answers with the queue's ready messages on every broker callrec
runs on: RabbitMQ's count, Redis's list lengths, and the embedded broker's visible rows.
Messages a worker has already taken (prefetched, or held for their countdown) are not counted.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery import Celery

from config.settings import Settings
from ledger.sweeper import LANES, Lane
from workers.celery_config import capture_queue_of

__all__ = ["capture_queue_depths"]

logger = logging.getLogger(__name__)


def capture_queue_depths(app: Celery, settings: Settings) -> dict[Lane, int] | None:
    """Ready messages in each capture lane's queue; None when the broker cannot tell (then
    the sweeper treats every stale row as lost, as it would without this check)."""
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            return {lane: _depth(connection, capture_queue_of(settings, lane)) for lane in LANES}
    except Exception as exc:
        logger.warning(
            "could not read the capture queues' depth (%s); stale rows all count as lost",
            type(exc).__name__,
        )
        return None


def _depth(connection: Any, queue: str) -> int:
    channel = connection.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except connection.channel_errors:
        # No such queue (Redis deletes an empty list; RabbitMQ: never declared): it holds
        # nothing, and a message published to it was dropped.
        return 0
    finally:
        with contextlib.suppress(Exception):  # RabbitMQ closed it after a channel error
            channel.close()
