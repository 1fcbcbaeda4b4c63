"""Which rows need a (re-)publish: the sweeper's queries.

The broker only wakes workers up; the ledger decides. A row needs publishing when it is
waiting and no message was ever published for it (the web process died before its relay
ran, or the publish failed), when its last message should long have been consumed (lost by
the broker: kombu's SQLite transport drops publishes on "database is locked" and forgets
in-flight messages of a killed worker), or when its claim is older than the lease (the worker
died mid-capture). Publishing twice is harmless: ``claim`` lets one attempt through.

A message older than the lease is not always lost: behind a deep backlog (a burst, a
backfill) it is still queued. Republishing every such row each sweep would add a copy of the
whole backlog to the queue per lease period. So, when the sweeper can read how many messages
each capture lane's queue holds, it republishes "lost" rows of a lane only up to the number of
that lane's published, waiting rows the queue cannot account for, oldest first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from ledger.models import WAITING_STATES, Recording, Source, State, utcnow

__all__ = [
    "LANES",
    "Lane",
    "in_backfill_lane",
    "mark_enqueued",
    "rows_to_publish",
    "unpublished_rows",
]

#: The queue a row's wake-ups go to: ``backfill`` for rows a ``callrec backfill`` found (and
#: the rows their lookups resolve into), ``fresh`` for everything else (``ledger.publish``).
Lane = Literal["fresh", "backfill"]
LANES: tuple[Lane, ...] = ("fresh", "backfill")

#: The lookup parent of a row, for :func:`in_backfill_lane` (outer-joined on ``parent_id``).
PARENT = aliased(Recording)


def in_backfill_lane() -> ColumnElement[bool]:
    """True for a row of the backfill lane, false (never NULL: it is negated for the fresh
    lane) otherwise; the query must outer-join ``PARENT``."""
    return or_(
        Recording.source == Source.BACKFILL,
        func.coalesce(PARENT.source, "") == Source.BACKFILL,
    )


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
    queued: Mapping[Lane, int] | None = None,
) -> list[int]:
    """Ids of rows to publish now, in id order.

    ``unpublished_grace``: how long a new row may wait for its web process's relay before the
    sweeper publishes it itself. ``queued``: how many messages each capture lane's queue holds
    now; None (unknown) counts every published row waiting past ``stuck_after`` as lost.
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
        if queued is None:
            return list(
                session.execute(
                    select(Recording.id)
                    .where(or_(never_published, message_lost, claim_expired))
                    .order_by(Recording.id)
                    .limit(limit)
                ).scalars()
            )
        ids = list(
            session.execute(
                select(Recording.id)
                .where(or_(never_published, claim_expired))
                .order_by(Recording.id)
                .limit(limit)
            ).scalars()
        )
        if session.execute(select(Recording.id).where(message_lost).limit(1)).first() is None:
            return sorted(ids)  # nothing stale: no need to count the backlog
        unaccounted = _unaccounted(session, queued, now)
        for lane in LANES:
            room = min(unaccounted.get(lane, 0), limit - len(ids))
            if room <= 0:
                continue
            lane_rows = in_backfill_lane() if lane == "backfill" else ~in_backfill_lane()
            ids += session.execute(
                select(Recording.id)
                .outerjoin(PARENT, Recording.parent_id == PARENT.id)
                .where(message_lost, lane_rows, Recording.id.not_in(ids))
                .order_by(Recording.enqueued_at, Recording.id)
                .limit(room)
            ).scalars()
        return sorted(ids)


def _unaccounted(session: Session, queued: Mapping[Lane, int], now: datetime) -> dict[Lane, int]:
    """Per lane: published rows still waiting (their message due by now) minus the messages
    the lane's queue holds; at least that many of the lane's messages are gone (or held by a
    worker that has not claimed its row yet: republishing those is harmless)."""
    backfill = in_backfill_lane()
    counts = session.execute(
        select(backfill, func.count())
        .select_from(Recording)
        .outerjoin(PARENT, Recording.parent_id == PARENT.id)
        .where(
            Recording.state.in_(WAITING_STATES),
            Recording.enqueued_at.is_not(None),
            Recording.enqueued_at <= now,
        )
        .group_by(backfill)
    ).all()
    waiting: dict[Lane, int] = {"fresh": 0, "backfill": 0}
    for is_backfill, count in counts:
        waiting["backfill" if is_backfill else "fresh"] += count
    return {lane: max(0, waiting[lane] - queued.get(lane, 0)) for lane in LANES}


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
