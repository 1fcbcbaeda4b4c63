"""Publish wake-ups for ledger rows and record that they were published."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from ledger.sweeper import mark_enqueued

__all__ = ["SendCapture", "publish_and_record"]

logger = logging.getLogger(__name__)

#: Sends one capture wake-up: (recording id, countdown seconds or None).
SendCapture = Callable[[int, float | None], None]


def publish_and_record(
    send: SendCapture,
    sessions: sessionmaker[Session],
    ids: Iterable[int],
    countdown: float | None = None,
    due: datetime | None = None,
) -> list[int]:
    """Send one message per id, stopping at the first broker error; mark the sent ones.

    Never raises: an unsent row stays unpublished in the ledger and the sweeper sends it later.
    ``due`` is when the message becomes deliverable (for countdowns); default now.
    """
    id_list = list(ids)
    sent: list[int] = []
    for recording_id in id_list:
        try:
            send(recording_id, countdown)
        except Exception as exc:
            logger.warning(
                "publish failed (%s); %s rows left to the sweeper",
                type(exc).__name__,
                len(id_list) - len(sent),
            )
            break
        sent.append(recording_id)
    try:
        mark_enqueued(sessions, sent, due)
    except Exception:
        logger.exception("could not record %s publishes; the sweeper may repeat them", len(sent))
    return sent
