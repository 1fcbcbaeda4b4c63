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
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import Update

from ledger.models import (
    WAITING_STATES,
    AccountState,
    Recording,
    RecordingEvent,
    State,
    UTCDateTime,
    utcnow,
)

__all__ = ["Claim", "claim", "defer", "finish", "release_for_retry"]

# A countdown message may arrive a little before the row's next_attempt_at (clock rounding).
EARLY_TOLERANCE = timedelta(seconds=2)

RECORDINGS = cast(Table, Recording.__table__)
EVENTS = cast(Table, RecordingEvent.__table__)
ACCOUNTS = cast(Table, AccountState.__table__)
_R = RECORDINGS.c


def _at(name: str) -> Any:
    return bindparam(name, type_=UTCDateTime())


# Core statements built once (the ORM session and building each statement per call cost
# ~2x the CPU of the claim itself: bench/capture_loop.py).
_CLAIM = (
    update(RECORDINGS)
    .where(
        _R.id == bindparam("rid"),
        or_(
            and_(
                _R.state.in_(WAITING_STATES),
                or_(_R.next_attempt_at.is_(None), _R.next_attempt_at <= _at("due_by")),
            ),
            and_(_R.state == State.FETCHING, _R.claimed_at < _at("stale_before")),
        ),
    )
    .values(
        state=State.FETCHING,
        claim_token=bindparam("token"),
        claimed_at=_at("now"),
        updated_at=_at("now"),
        attempts=_R.attempts + 1,
    )
    .returning(
        _R.provider,
        _R.account,
        _R.recording_key,
        _R.kind,
        _R.call_id,
        _R.hints,
        _R.attempts,
        _R.created_at,
    )
)
_PAUSED_UNTIL = select(ACCOUNTS.c.paused_until).where(
    ACCOUNTS.c.provider == bindparam("provider"), ACCOUNTS.c.account == bindparam("account")
)
_ADD_EVENT = insert(EVENTS).values(
    recording_id=bindparam("rid"),
    at=_at("now"),
    state=bindparam("event_state"),
    attempt=bindparam("attempt"),
    detail=bindparam("detail"),
)


@lru_cache(maxsize=32)
def _transition_statement(columns: tuple[str, ...]) -> Update:
    """``UPDATE … WHERE id, state fetching, token`` setting ``columns`` (one per value set)."""
    return (
        update(RECORDINGS)
        .where(
            _R.id == bindparam("rid"),
            _R.state == State.FETCHING,
            _R.claim_token == bindparam("token"),
        )
        .values(
            state=bindparam("new_state"),
            updated_at=_at("now"),
            claim_token=None,
            **{c: bindparam(f"v_{c}", type_=RECORDINGS.c[c].type) for c in columns},
        )
    )


def _engine(sessions: sessionmaker[Session]) -> Engine:
    bind = sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


@dataclass(frozen=True)
class Claim:
    """A snapshot of the claimed row; ``token`` must accompany every transition.

    ``paused_until``: the account's rate-limit pause, if it runs past the claim (read in the
    claim's transaction, so the capture needs no second ledger round trip for it).
    """

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
    paused_until: datetime | None = None


def claim(sessions: sessionmaker[Session], recording_id: int, lease: timedelta) -> Claim | None:
    """Take the row for one capture attempt, or None if it is final, busy or not yet due.

    One transaction: the conditional ``UPDATE … RETURNING``, the account's pause, the event.
    """
    now = utcnow()
    token = str(uuid.uuid4())
    with _engine(sessions).begin() as connection:
        row = connection.execute(
            _CLAIM,
            {
                "rid": recording_id,
                "due_by": now + EARLY_TOLERANCE,
                "stale_before": now - lease,
                "token": token,
                "now": now,
            },
        ).one_or_none()
        if row is None:
            return None
        paused = connection.execute(
            _PAUSED_UNTIL, {"provider": row.provider, "account": row.account}
        ).scalar_one_or_none()
        _add_event(connection, recording_id, now, State.FETCHING, row.attempts, None)
    return Claim(
        id=recording_id,
        token=token,
        provider=row.provider,
        account=row.account,
        recording_key=row.recording_key,
        kind=row.kind,
        call_id=row.call_id,
        hints=dict(row.hints or {}),
        attempt=row.attempts,
        created_at=row.created_at,
        paused_until=paused if paused is not None and paused > now else None,
    )


def _add_event(
    connection: Connection,
    recording_id: int,
    now: datetime,
    state: str,
    attempt: int,
    detail: str | None,
) -> None:
    connection.execute(
        _ADD_EVENT,
        {
            "rid": recording_id,
            "now": now,
            "event_state": state,
            "attempt": attempt,
            "detail": detail,
        },
    )


def _transition(
    sessions: sessionmaker[Session],
    held: Claim,
    state: str,
    detail: str | None,
    **values: Any,
) -> bool:
    now = utcnow()
    statement = _transition_statement(tuple(sorted(values)))
    params = {f"v_{column}": value for column, value in values.items()}
    with _engine(sessions).begin() as connection:
        changed = connection.execute(
            statement,
            {"rid": held.id, "token": held.token, "new_state": state, "now": now, **params},
        ).rowcount
        if changed == 1:
            _add_event(connection, held.id, now, state, held.attempt, detail)
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
