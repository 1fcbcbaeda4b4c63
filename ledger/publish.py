"""Publish wake-ups for ledger rows and record that they were published.

Each wake-up goes to a *lane*: ``backfill`` for rows a ``callrec backfill`` found (and the rows
their lookups resolve into), ``fresh`` for everything else (webhooks, polls, retries of those).
The lane is read from the row, so the relay, the sweeper, retries and re-drives all route a
row the same way; the send function maps the lane to a queue (``workers.celery_config``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import Recording
from ledger.sweeper import PARENT, Lane, in_backfill_lane, mark_enqueued

__all__ = ["CaptureBatch", "Lane", "SendCapture", "backfill_rows", "publish_and_record"]

logger = logging.getLogger(__name__)

#: Sends one capture wake-up: (recording id, countdown seconds or None, lane).
SendCapture = Callable[[int, float | None, Lane], None]
#: Opens a batch of wake-ups: a block that yields a ``SendCapture``; a message sent inside it
#: may only be stored when the block ends, which then raises if storing failed (none stored).
CaptureBatch = Callable[[], AbstractContextManager[SendCapture]]


def backfill_rows(sessions: sessionmaker[Session], ids: Sequence[int]) -> set[int]:
    """Which of ``ids`` belong to a backfill: the row's source, or its lookup parent's."""
    if not ids:
        return set()
    with sessions() as session:
        return set(
            session.execute(
                select(Recording.id)
                .outerjoin(PARENT, Recording.parent_id == PARENT.id)
                .where(Recording.id.in_(list(ids)), in_backfill_lane())
            ).scalars()
        )


def _lanes(sessions: sessionmaker[Session], ids: list[int]) -> set[int]:
    """``backfill_rows``, or none when the ledger cannot say (every row then goes fresh)."""
    try:
        return backfill_rows(sessions, ids)
    except Exception as exc:
        logger.warning("could not read the rows' lanes (%s); publishing fresh", type(exc).__name__)
        return set()


def publish_and_record(
    send: SendCapture,
    sessions: sessionmaker[Session],
    ids: Iterable[int],
    countdown: float | None = None,
    due: datetime | None = None,
    *,
    batch: CaptureBatch | None = None,
) -> list[int]:
    """Send one message per id, stopping at the first broker error; mark the sent ones.

    With ``batch``, the messages go through one batch; if the batch fails when it ends, none
    of its messages counts as sent. Never raises: an unsent row stays unpublished in the ledger
    and the relay or the sweeper sends it later.
    ``due`` is when the message becomes deliverable (for countdowns); default now.
    """
    id_list = list(ids)
    backfill = _lanes(sessions, id_list)
    sent: list[int] = []
    try:
        with batch() if batch is not None else contextlib.nullcontext(send) as send_one:
            for recording_id in id_list:
                try:
                    send_one(
                        recording_id, countdown, "backfill" if recording_id in backfill else "fresh"
                    )
                except Exception as exc:
                    logger.warning(
                        "publish failed (%s); %s rows left to the sweeper",
                        type(exc).__name__,
                        len(id_list) - len(sent),
                    )
                    break
                sent.append(recording_id)
    except Exception as exc:  # the batch could not be stored: nothing of it was published
        logger.warning(
            "publishing a batch of %s failed (%s); its rows are left unpublished",
            len(sent),
            type(exc).__name__,
        )
        sent = []
    try:
        mark_enqueued(sessions, sent, due)
    except Exception:
        logger.exception("could not record %s publishes; the sweeper may repeat them", len(sent))
    return sent
