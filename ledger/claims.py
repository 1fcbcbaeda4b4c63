"""The exactly-once gate and the state transitions of one recording row.

``claim`` is one conditional UPDATE: it succeeds for a row that is waiting and due, or whose
previous claim is older than the lease (its worker died: the task time limit is shorter than
the lease). Every later transition names the claim token, so a worker that lost its claim can
change nothing. Atomic on SQLite and PostgreSQL alike, with no SELECT … FOR UPDATE.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import WAITING_STATES, Recording, RecordingEvent, State, utcnow

__all__ = ["Claim", "claim", "defer", "finish", "release_for_retry"]

# A countdown message may arrive a little before the row's next_attempt_at (clock rounding).
EARLY_TOLERANCE = timedelta(seconds=2)


@dataclass(frozen=True)
class Claim:
    """A snapshot of the claimed row; ``token`` must accompany every transition."""

    id: int
    token: str
    provider: str
    account: str
    recording_key: str
    kind: str
    call_id: str | None
    hints: dict[str, Any]
    attempt: int
    created_at: datetime


def claim(sessions: sessionmaker[Session], recording_id: int, lease: timedelta) -> Claim | None:
    """Take the row for one capture attempt, or None if it is final, busy or not yet due."""
    now = utcnow()
    token = str(uuid.uuid4())
    with sessions.begin() as session:
        claimed = session.execute(  # type: ignore[attr-defined]
            update(Recording)
            .where(
                Recording.id == recording_id,
                or_(
                    and_(
                        Recording.state.in_(WAITING_STATES),
                        or_(
                            Recording.next_attempt_at.is_(None),
                            Recording.next_attempt_at <= now + EARLY_TOLERANCE,
                        ),
                    ),
                    and_(Recording.state == State.FETCHING, Recording.claimed_at < now - lease),
                ),
            )
            .values(
                state=State.FETCHING,
                claim_token=token,
                claimed_at=now,
                updated_at=now,
                attempts=Recording.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            return None
        row = session.execute(select(Recording).where(Recording.id == recording_id)).scalar_one()
        session.add(
            RecordingEvent(
                recording_id=row.id, at=now, state=State.FETCHING, attempt=row.attempts, detail=None
            )
        )
        return Claim(
            id=row.id,
            token=token,
            provider=row.provider,
            account=row.account,
            recording_key=row.recording_key,
            kind=row.kind,
            call_id=row.call_id,
            hints=dict(row.hints or {}),
            attempt=row.attempts,
            created_at=row.created_at,
        )


def _transition(
    sessions: sessionmaker[Session],
    held: Claim,
    state: str,
    detail: str | None,
    **values: Any,
) -> bool:
    now = utcnow()
    with sessions.begin() as session:
        changed = session.execute(  # type: ignore[attr-defined]
            update(Recording)
            .where(
                Recording.id == held.id,
                Recording.state == State.FETCHING,
                Recording.claim_token == held.token,
            )
            .values(state=state, updated_at=now, claim_token=None, **values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed == 1:
            session.add(
                RecordingEvent(
                    recording_id=held.id, at=now, state=state, attempt=held.attempt, detail=detail
                )
            )
        return changed == 1


def finish(
    sessions: sessionmaker[Session],
    held: Claim,
    state: str,
    *,
    detail: str | None = None,
    **values: Any,
) -> bool:
    """Move a claimed row to a final state; False if the claim was lost meanwhile."""
    if state == State.STORED:
        values.setdefault("stored_at", utcnow())
    if state == State.FAILED:
        values["last_error"] = detail
    return _transition(sessions, held, state, detail, **values)


def release_for_retry(
    sessions: sessionmaker[Session], held: Claim, reason: str, delay_seconds: float
) -> datetime | None:
    """Put the row back to wait ``delay_seconds``; return when it is due, or None if lost."""
    due = utcnow() + timedelta(seconds=delay_seconds)
    released = _transition(
        sessions,
        held,
        State.RETRYING,
        reason,
        last_error=reason,
        next_attempt_at=due,
        enqueued_at=None,
    )
    return due if released else None


def defer(sessions: sessionmaker[Session], held: Claim, until: datetime, reason: str) -> bool:
    """Put the row back to wait until ``until`` without counting this attempt.

    For an attempt that never called the provider (its account is paused by a rate limit):
    the attempt count, which bounds real failures, stays as it was before the claim.
    """
    return _transition(
        sessions,
        held,
        State.RETRYING,
        reason,
        attempts=held.attempt - 1,
        next_attempt_at=until,
        enqueued_at=None,
    )
