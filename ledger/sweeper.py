"""Which rows need a (re-)publish: the sweeper's queries.

The broker only wakes workers up; the ledger decides. A row needs publishing when it is
waiting and no message was ever published for it (the web process died before its relay
ran, or the publish failed), when its last message should long have been consumed (lost by
the broker: kombu's SQLite transport drops publishes on "database is locked" and forgets
in-flight messages of a killed worker), or when its claim is older than the lease (the worker
died mid-capture). Publishing twice is harmless: ``claim`` lets one attempt through.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import WAITING_STATES, Recording, State, utcnow

__all__ = ["mark_enqueued", "rows_to_publish", "unpublished_rows"]


def unpublished_rows(sessions: sessionmaker[Session], limit: int = 500) -> list[int]:
    """Waiting rows that are due and were never published: the relay's work list."""
    now = utcnow()
    with sessions.begin() as session:
        return list(
            session.execute(
                select(Recording.id)
                .where(
                    Recording.state.in_(WAITING_STATES),
                    Recording.enqueued_at.is_(None),
                    or_(Recording.next_attempt_at.is_(None), Recording.next_attempt_at <= now),
                )
                .order_by(Recording.id)
                .limit(limit)
            ).scalars()
        )


def rows_to_publish(
    sessions: sessionmaker[Session],
    stuck_after: timedelta,
    unpublished_grace: timedelta,
    limit: int = 500,
) -> list[int]:
    """Ids of rows to publish now, oldest first.

    ``unpublished_grace``: how long a new row may wait for its web process's relay before the
    sweeper publishes it itself.
    """
    now = utcnow()
    stale = now - stuck_after
    never_published = and_(
        Recording.state.in_(WAITING_STATES),
        Recording.enqueued_at.is_(None),
        Recording.updated_at < now - unpublished_grace,
        or_(Recording.next_attempt_at.is_(None), Recording.next_attempt_at <= now),
    )
    message_lost = and_(Recording.state.in_(WAITING_STATES), Recording.enqueued_at < stale)
    claim_expired = and_(
        Recording.state == State.FETCHING,
        Recording.claimed_at < stale,
        or_(Recording.enqueued_at.is_(None), Recording.enqueued_at < stale),
    )
    with sessions.begin() as session:
        return list(
            session.execute(
                select(Recording.id)
                .where(or_(never_published, message_lost, claim_expired))
                .order_by(Recording.id)
                .limit(limit)
            ).scalars()
        )


def mark_enqueued(
    sessions: sessionmaker[Session], ids: Iterable[int], at: datetime | None = None
) -> None:
    """Record that a message for these rows was published (``at``: when it becomes due)."""
    id_list = list(ids)
    if not id_list:
        return
    with sessions.begin() as session:
        session.execute(
            update(Recording)
            .where(Recording.id.in_(id_list))
            .values(enqueued_at=at or utcnow())
            .execution_options(synchronize_session=False)
        )
