"""Operator re-drives: put a recording back to waiting with its attempts reset.

Each re-drive is one conditional ``UPDATE`` (as ``claims.py``) that only matches a row in a
re-drivable state, plus a ``recording_events`` row saying who re-drove it and what it was, in
the same transaction. A stored row is never re-driven (its object exists; a second capture
would only find it), nor a resolved lookup, nor a row a worker holds right now.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import Recording, RecordingEvent, State, utcnow

__all__ = ["REDRIVABLE_STATES", "NotRedrivable", "redrive", "redrive_failed"]

#: Failed rows, and waiting rows (made due now, their attempts reset).
REDRIVABLE_STATES = (State.FAILED, State.RETRYING, State.ACCEPTED)
_BATCH = 200


class NotRedrivable(LookupError):
    """The row does not exist, or its state cannot be re-driven (the message says which)."""


@dataclass(frozen=True)
class Redriven:
    id: int
    previous_state: str
    previous_attempts: int
    previous_error: str | None


def _redrive_row(session: Session, row: Recording, actor: str) -> Redriven | None:
    now = utcnow()
    changed = session.execute(  # type: ignore[attr-defined]
        update(Recording)
        .where(
            Recording.id == row.id,
            Recording.state == row.state,
            Recording.state.in_(REDRIVABLE_STATES),
        )
        .values(
            state=State.ACCEPTED,
            attempts=0,
            next_attempt_at=None,
            enqueued_at=None,
            claim_token=None,
            claimed_at=None,
            last_error=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return None
    was = f"was {row.state} after {row.attempts} attempt(s)"
    if row.last_error:
        was += f": {row.last_error[:500]}"
    session.add(
        RecordingEvent(
            recording_id=row.id,
            at=now,
            state=State.ACCEPTED,
            attempt=0,
            detail=f"re-driven by {actor} ({was})",
        )
    )
    return Redriven(row.id, row.state, row.attempts, row.last_error)


def redrive(sessions: sessionmaker[Session], recording_id: int, actor: str) -> Redriven:
    """Re-drive one row; ``NotRedrivable`` (with the reason) if it is missing or not allowed."""
    with sessions.begin() as session:
        row = session.get(Recording, recording_id)
        if row is None:
            raise NotRedrivable(f"no ledger row {recording_id}")
        if row.state not in REDRIVABLE_STATES:
            why = {
                State.STORED: "it is stored (the object exists; nothing to capture again)",
                State.RESOLVED: "it is a resolved lookup (its recordings have their own rows)",
                State.FETCHING: "a worker holds it right now (the sweeper re-drives it if the "
                "worker died)",
            }.get(row.state, f"its state is {row.state}")
            raise NotRedrivable(f"row {recording_id} not re-driven: {why}")
        done = _redrive_row(session, row, actor)
        if done is None:
            raise NotRedrivable(f"row {recording_id} changed meanwhile; look again")
        return done


def redrive_failed(
    sessions: sessionmaker[Session],
    actor: str,
    *,
    provider: str | None = None,
    account: str | None = None,
    since: datetime | None = None,
) -> Iterator[list[Redriven]]:
    """Re-drive every failed row (optionally of one provider/account, failed at or after
    ``since``), a batch per transaction, oldest id first; yields each committed batch."""
    after = 0
    while True:
        query = select(Recording).where(Recording.state == State.FAILED, Recording.id > after)
        if provider is not None:
            query = query.where(Recording.provider == provider)
        if account is not None:
            query = query.where(Recording.account == account)
        if since is not None:
            query = query.where(Recording.updated_at >= since)
        with sessions.begin() as session:
            rows = list(session.execute(query.order_by(Recording.id).limit(_BATCH)).scalars())
            if not rows:
                return
            after = rows[-1].id
            done = [item for row in rows if (item := _redrive_row(session, row, actor))]
        yield done
