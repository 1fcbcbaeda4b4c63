"""Record what a provider announced, idempotently: the step that makes a webhook "accepted".

A delivery is new or a duplicate by its (provider, account, delivery_id); a recording row is
created once per (provider, account, recording_key) and found again afterwards (dj-stripe's
"insert, and on conflict return the existing row"). Both happen in one transaction, so a 2xx
is only ever sent for something committed.

This is the webhook's hot path, so it runs SQLAlchemy Core statements built once per dialect
(compiled once, cached by SQLAlchemy) on a plain connection: no ORM session, no per-request
statement construction (bench/receiver.py measured the ORM path at ~3x the cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import Delivery, Recording, State, utcnow
from providers.base import RecordingRef, WebhookEvent

__all__ = ["AcceptResult", "accept_event", "accept_in", "accept_refs", "engine_of"]


@dataclass
class AcceptResult:
    status: str  # "accepted", "duplicate" or "ignored"
    recording_ids: list[int] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)  # rows created now: to be published


@dataclass(frozen=True)
class _Statements:
    insert_delivery: Any
    insert_recording: Any
    find_recording: Any


DELIVERIES = cast(Table, Delivery.__table__)
RECORDINGS = cast(Table, Recording.__table__)


@lru_cache(maxsize=4)
def _statements(dialect: str) -> _Statements:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return _Statements(
        insert_delivery=insert(DELIVERIES).on_conflict_do_nothing().returning(DELIVERIES.c.id),
        insert_recording=insert(RECORDINGS).on_conflict_do_nothing().returning(RECORDINGS.c.id),
        find_recording=select(RECORDINGS.c.id).where(
            RECORDINGS.c.provider == bindparam("p"),
            RECORDINGS.c.account == bindparam("a"),
            RECORDINGS.c.recording_key == bindparam("k"),
        ),
    )


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    bind = sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def _upsert_refs(
    connection: Connection,
    provider: str,
    account: str,
    refs: Sequence[RecordingRef],
    source: str,
    now: datetime,
    parent_id: int | None,
    result: AcceptResult,
) -> None:
    statements = _statements(connection.dialect.name)
    for ref in refs:
        hints = dict(ref.hints)
        if ref.lookup:
            hints["lookup"] = dict(ref.lookup)
        new_id = connection.execute(
            statements.insert_recording,
            {
                "provider": provider,
                "account": account,
                "recording_key": ref.ledger_key,
                "kind": "recording" if ref.recording_id else "lookup",
                "source": source,
                "state": State.ACCEPTED,
                "attempts": 0,
                "call_id": ref.call_id,
                "hints": hints,
                "parent_id": parent_id,
                "created_at": now,
                "updated_at": now,
                "next_attempt_at": now,
            },
        ).scalar_one_or_none()
        if new_id is None:
            existing = connection.execute(
                statements.find_recording, {"p": provider, "a": account, "k": ref.ledger_key}
            ).scalar_one()
            result.recording_ids.append(existing)
        else:
            result.recording_ids.append(new_id)
            result.new_ids.append(new_id)


def accept_in(
    connection: Connection, provider: str, account: str, event: WebhookEvent, now: datetime
) -> AcceptResult:
    """Record a verified delivery and its recordings inside the caller's transaction."""
    delivery = connection.execute(
        _statements(connection.dialect.name).insert_delivery,
        {
            "provider": provider,
            "account": account,
            "delivery_id": event.delivery_id,
            "event_type": event.event_type[:128],
            "received_at": now,
        },
    ).scalar_one_or_none()
    if delivery is None:
        return AcceptResult("duplicate")
    if not event.recordings:
        return AcceptResult("ignored")
    result = AcceptResult("accepted")
    _upsert_refs(connection, provider, account, event.recordings, "webhook", now, None, result)
    return result


def accept_event(
    sessions: sessionmaker[Session], provider: str, account: str, event: WebhookEvent
) -> AcceptResult:
    """Record a verified webhook delivery and the recordings it announces, in one transaction."""
    with engine_of(sessions).begin() as connection:
        return accept_in(connection, provider, account, event, utcnow())


def accept_refs(
    sessions: sessionmaker[Session],
    provider: str,
    account: str,
    refs: Sequence[RecordingRef],
    *,
    source: str,
    parent_id: int | None = None,
) -> AcceptResult:
    """Record recordings found by a list or a lookup (no delivery to deduplicate)."""
    result = AcceptResult("accepted")
    with engine_of(sessions).begin() as connection:
        _upsert_refs(connection, provider, account, refs, source, utcnow(), parent_id, result)
    return result
