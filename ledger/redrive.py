"""Re-drive recordings: put a row back to waiting, as if newly accepted, for another try.

The ledger decides, the broker only wakes workers: a re-driven row is waiting, due now and
unpublished (``enqueued_at`` cleared), so the relay publishes it within its interval and, without
a relay, the beat sweeper after its grace (callers may also publish it at once). Its attempts
start again from zero, so it gets the full ``CALLREC_MAX_ATTEMPTS``; ``last_error`` keeps the
reason it had failed with until a new attempt ends. Each re-drive is one conditional UPDATE
(as ``claims.py``) that only matches a row in an allowed state, plus a ``recording_events`` row
saying who re-drove it and what it was, in the same transaction: re-driving twice, or a row
that changed meanwhile, changes nothing.

Never re-driven: a stored row (its object exists; a second capture would only find it), a
resolved lookup (its recordings have their own rows), a row a worker holds right now.

* :func:`redrive` — one failed row (the status page's button);
* :func:`redrive_row` — one failed or waiting row, refusing others with the reason (the CLI);
* :func:`redrive_failed` — every failed row of a filter, in committed batches (the CLI).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import Recording, RecordingEvent, State, utcnow

__all__ = [
    "REDRIVABLE_STATES",
    "REDRIVEN_STATE",
    "NotRedrivable",
    "Redriven",
    "redrive",
    "redrive_failed",
    "redrive_row",
]

#: The state a re-driven row waits in: attempts are reset, so it is as good as newly accepted.
REDRIVEN_STATE = State.ACCEPTED
#: Failed rows, and waiting rows (made due now, their attempts reset).
REDRIVABLE_STATES = (State.FAILED, State.RETRYING, State.ACCEPTED)
_BATCH = 200
_REFUSALS = {
    State.STORED: "it is stored (the object exists; nothing to capture again)",
    State.RESOLVED: "it is a resolved lookup (its recordings have their own rows)",
    State.FETCHING: "a worker holds it right now (the sweeper re-drives it if the worker died)",
}


class NotRedrivable(LookupError):
    """The row does not exist, or its state cannot be re-driven (the message says which)."""


@dataclass(frozen=True)
class Redriven:
    id: int
    previous_state: str
    previous_attempts: int
    previous_error: str | None


def _redrive_in(session: Session, recording_id: int, states: tuple[str, ...], detail: str) -> bool:
    """The conditional UPDATE and its audit event, in the caller's transaction."""
    now = utcnow()
    changed = session.execute(  # type: ignore[attr-defined]
        update(Recording)
        .where(Recording.id == recording_id, Recording.state.in_(states))
        .values(
            state=REDRIVEN_STATE,
            attempts=0,
            next_attempt_at=now,
            enqueued_at=None,
            claimed_at=None,
            claim_token=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return False
    session.add(
        RecordingEvent(
            recording_id=recording_id, at=now, state=REDRIVEN_STATE, attempt=0, detail=detail
        )
    )
    return True


def redrive(sessions: sessionmaker[Session], recording_id: int, *, reason: str) -> bool:
    """Put failed row ``recording_id`` back to waiting; False if it is not (or no longer) failed.

    ``reason`` (who asked, and why) goes into the audit event; keep it free of secrets.
    """
    with sessions.begin() as session:
        return _redrive_in(session, recording_id, (State.FAILED,), f"re-driven: {reason}")


def _redrive_loaded(session: Session, row: Recording, actor: str) -> Redriven | None:
    was = f"was {row.state} after {row.attempts} attempt(s)"
    if row.last_error:
        was += f": {row.last_error[:500]}"
    if not _redrive_in(session, row.id, (row.state,), f"re-driven by {actor} ({was})"):
        return None
    return Redriven(row.id, row.state, row.attempts, row.last_error)


def redrive_row(sessions: sessionmaker[Session], recording_id: int, actor: str) -> Redriven:
    """Re-drive one failed or waiting row; ``NotRedrivable`` (with the reason) otherwise."""
    with sessions.begin() as session:
        row = session.get(Recording, recording_id)
        if row is None:
            raise NotRedrivable(f"no ledger row {recording_id}")
        if row.state not in REDRIVABLE_STATES:
            why = _REFUSALS.get(row.state, f"its state is {row.state}")
            raise NotRedrivable(f"row {recording_id} not re-driven: {why}")
        done = _redrive_loaded(session, row, actor)
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
            done = [item for row in rows if (item := _redrive_loaded(session, row, actor))]
        yield done
