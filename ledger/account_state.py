"""Per-account state in the ledger: the poll schedule, the poll lease, the watermark, the pause.

Every write is one conditional ``UPDATE`` (as ``claims.py``), atomic on SQLite and PostgreSQL
alike, so any number of beat and worker processes may race:

* ``schedule_poll`` lets one scheduler per interval enqueue the account's poll (several beats
  are safe: the others' UPDATE matches no row);
* ``acquire_lease`` lets one poll run per account at a time. The lease outlives the poll task's
  hard time limit (``CALLREC_STUCK_AFTER_SECONDS``), so a holder that died is replaced after it,
  and every later write names the lease token, so a poll that lost its lease changes nothing;
* ``finish_poll`` moves the watermark only on success, and only forward;
* ``pause`` records "no API call for this account before T" after a 429, only ever extending it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import AccountState, utcnow

__all__ = [
    "PollState",
    "acquire_lease",
    "finish_poll",
    "pause",
    "paused_until",
    "poll_state",
    "schedule_poll",
]

ACCOUNT_STATE = cast(Table, AccountState.__table__)
MAX_REASON = 1000


@dataclass(frozen=True)
class PollState:
    """A snapshot of one account's row (None fields: never happened)."""

    provider: str
    account: str
    watermark: datetime | None
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    last_found: int | None
    last_new: int | None
    paused_until: datetime | None
    pause_reason: str | None


def _ensure(session: Session, provider: str, account: str) -> None:
    """Create the account's row if it is missing (never touches an existing one)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(
        insert(ACCOUNT_STATE)
        .values(provider=provider, account=account, updated_at=utcnow())
        .on_conflict_do_nothing()
    )


def _where(provider: str, account: str) -> Any:
    return and_(AccountState.provider == provider, AccountState.account == account)


def _update(
    sessions: sessionmaker[Session], provider: str, account: str, condition: Any, **values: Any
) -> bool:
    with sessions.begin() as session:
        _ensure(session, provider, account)
        changed = session.execute(  # type: ignore[attr-defined]
            update(AccountState)
            .where(_where(provider, account), condition)
            .values(updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        ).rowcount
    return bool(changed == 1)


def schedule_poll(
    sessions: sessionmaker[Session], provider: str, account: str, interval: timedelta
) -> bool:
    """True for the one caller per ``interval`` that should enqueue this account's poll."""
    now = utcnow()
    due = or_(
        AccountState.poll_scheduled_at.is_(None),
        AccountState.poll_scheduled_at <= now - interval,
    )
    return _update(sessions, provider, account, due, poll_scheduled_at=now)


def acquire_lease(
    sessions: sessionmaker[Session], provider: str, account: str, lease: timedelta
) -> str | None:
    """The lease token if no other poll of the account holds a live lease, else None."""
    now = utcnow()
    token = str(uuid.uuid4())
    free = or_(AccountState.lease_until.is_(None), AccountState.lease_until < now)
    taken = _update(
        sessions,
        provider,
        account,
        free,
        lease_token=token,
        lease_until=now + lease,
        last_poll_started_at=now,
    )
    return token if taken else None


def finish_poll(
    sessions: sessionmaker[Session],
    provider: str,
    account: str,
    token: str,
    *,
    watermark: datetime | None = None,
    error: str | None = None,
    found: int | None = None,
    new: int | None = None,
) -> bool:
    """Release the lease and record the outcome: success (``watermark``) or ``error``.

    On success the watermark moves to ``watermark`` unless it is already later. False if the
    lease was lost meanwhile (then nothing is written: another poll owns the account).
    """
    now = utcnow()
    values: dict[str, Any] = {"lease_token": None, "lease_until": None}
    if error is None:
        values |= {"last_success_at": now, "last_error": None, "last_found": found}
        values["last_new"] = new
    else:
        values |= {"last_failure_at": now, "last_error": error[:MAX_REASON]}
    with sessions.begin() as session:
        changed = session.execute(  # type: ignore[attr-defined]
            update(AccountState)
            .where(_where(provider, account), AccountState.lease_token == token)
            .values(updated_at=now, **values)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed == 1 and error is None and watermark is not None:
            session.execute(
                update(AccountState)
                .where(
                    _where(provider, account),
                    or_(AccountState.watermark.is_(None), AccountState.watermark < watermark),
                )
                .values(watermark=watermark)
                .execution_options(synchronize_session=False)
            )
    return bool(changed == 1)


def pause(
    sessions: sessionmaker[Session], provider: str, account: str, until: datetime, reason: str
) -> bool:
    """Record that the account's API must not be called before ``until`` (never shortened)."""
    later = or_(AccountState.paused_until.is_(None), AccountState.paused_until < until)
    return _update(
        sessions, provider, account, later, paused_until=until, pause_reason=reason[:MAX_REASON]
    )


def paused_until(sessions: sessionmaker[Session], provider: str, account: str) -> datetime | None:
    """When the account's pause ends, if it is paused now."""
    with sessions() as session:
        until = session.execute(
            select(AccountState.paused_until).where(_where(provider, account))
        ).scalar_one_or_none()
    return until if until is not None and until > utcnow() else None


def poll_state(sessions: sessionmaker[Session], provider: str, account: str) -> PollState | None:
    """The account's row, or None if it was never scheduled, polled or paused."""
    with sessions() as session:
        row = session.execute(
            select(AccountState).where(_where(provider, account))
        ).scalar_one_or_none()
    if row is None:
        return None
    return PollState(
        provider=row.provider,
        account=row.account,
        watermark=row.watermark,
        last_success_at=row.last_success_at,
        last_failure_at=row.last_failure_at,
        last_error=row.last_error,
        last_found=row.last_found,
        last_new=row.last_new,
        paused_until=row.paused_until,
        pause_reason=row.pause_reason,
    )
