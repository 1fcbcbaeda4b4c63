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

__all__ = [
    "AcceptResult",
    "Announcement",
    "accept_batch",
    "accept_event",
    "accept_in",
    "accept_refs",
    "engine_of",
    "known_keys",
]


@dataclass
class AcceptResult:
    status: str  # "accepted", "duplicate" or "ignored"
    recording_ids: list[int] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)  # rows created now: to be published


@dataclass(frozen=True)
class _Statements:
    insert_deliveries: Any
    insert_recordings: Any
    find_recording: Any


DELIVERIES = cast(Table, Delivery.__table__)
RECORDINGS = cast(Table, Recording.__table__)

#: One announcement to accept: (provider, account, verified event).
Announcement = tuple[str, str, WebhookEvent]


@lru_cache(maxsize=4)
def _statements(dialect: str) -> _Statements:
    """Built once per dialect. Executed with a list of parameter sets, SQLAlchemy sends each
    insert as one multi-row ``INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING``
    ("insertmanyvalues"); the natural key comes back so rows can be matched to the input."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return _Statements(
        insert_deliveries=insert(DELIVERIES)
        .on_conflict_do_nothing()
        .returning(DELIVERIES.c.provider, DELIVERIES.c.account, DELIVERIES.c.delivery_id),
        insert_recordings=insert(RECORDINGS)
        .on_conflict_do_nothing()
        .returning(
            RECORDINGS.c.provider,
            RECORDINGS.c.account,
            RECORDINGS.c.recording_key,
            RECORDINGS.c.id,
        ),
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


def _recording_params(
    provider: str,
    account: str,
    ref: RecordingRef,
    source: str,
    now: datetime,
    parent_id: int | None,
) -> dict[str, Any]:
    hints = dict(ref.hints)
    if ref.lookup:
        hints["lookup"] = dict(ref.lookup)
    return {
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
    }


def _upsert_refs(
    connection: Connection,
    entries: Sequence[tuple[AcceptResult, str, str, RecordingRef]],
    source: str,
    now: datetime,
    parent_id: int | None,
) -> None:
    """Create the recording rows of ``entries`` (one statement), or find the existing ones.

    Each entry's result gets the row id; ``new_ids`` only where this call created the row (the
    first entry of a key, when several in one batch name the same recording).
    """
    if not entries:
        return
    statements = _statements(connection.dialect.name)
    params = [_recording_params(p, a, ref, source, now, parent_id) for _, p, a, ref in entries]
    created = {
        (row[0], row[1], row[2]): row[3]
        for row in connection.execute(statements.insert_recordings, params)
    }
    seen: dict[tuple[str, str, str], int] = {}
    for result, provider, account, ref in entries:
        key = (provider, account, ref.ledger_key)
        new_id = created.pop(key, None)
        if new_id is not None:
            seen[key] = new_id
            result.recording_ids.append(new_id)
            result.new_ids.append(new_id)
            continue
        existing = seen.get(key)
        if existing is None:
            existing = connection.execute(
                statements.find_recording, {"p": provider, "a": account, "k": ref.ledger_key}
            ).scalar_one()
            seen[key] = existing
        result.recording_ids.append(existing)


def accept_batch(
    connection: Connection, announcements: Sequence[Announcement], now: datetime
) -> list[AcceptResult]:
    """Record verified deliveries and their recordings inside the caller's transaction.

    Two statements for the whole batch (deliveries, then recordings), whatever its size. A
    delivery already recorded, or named twice in the batch, is a ``duplicate`` after the first.
    """
    if not announcements:
        return []
    statements = _statements(connection.dialect.name)
    inserted = {
        (row[0], row[1], row[2])
        for row in connection.execute(
            statements.insert_deliveries,
            [
                {
                    "provider": provider,
                    "account": account,
                    "delivery_id": event.delivery_id,
                    "event_type": event.event_type[:128],
                    "received_at": now,
                }
                for provider, account, event in announcements
            ],
        )
    }
    results: list[AcceptResult] = []
    entries: list[tuple[AcceptResult, str, str, RecordingRef]] = []
    for provider, account, event in announcements:
        key = (provider, account, event.delivery_id)
        if key not in inserted:
            results.append(AcceptResult("duplicate"))
            continue
        inserted.discard(key)  # a second copy in this batch is a duplicate
        if not event.recordings:
            results.append(AcceptResult("ignored"))
            continue
        result = AcceptResult("accepted")
        results.append(result)
        entries.extend((result, provider, account, ref) for ref in event.recordings)
    _upsert_refs(connection, entries, "webhook", now, None)
    return results


def accept_in(
    connection: Connection, provider: str, account: str, event: WebhookEvent, now: datetime
) -> AcceptResult:
    """Record one verified delivery and its recordings inside the caller's transaction."""
    return accept_batch(connection, [(provider, account, event)], now)[0]


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
        entries = [(result, provider, account, ref) for ref in refs]
        _upsert_refs(connection, entries, source, utcnow(), parent_id)
    return result


def known_keys(
    sessions: sessionmaker[Session], provider: str, account: str, keys: Sequence[str]
) -> set[str]:
    """Which of ``keys`` already have a ledger row for the account (a backfill's dry run)."""
    if not keys:
        return set()
    with sessions() as session:
        return set(
            session.execute(
                select(RECORDINGS.c.recording_key).where(
                    RECORDINGS.c.provider == provider,
                    RECORDINGS.c.account == account,
                    RECORDINGS.c.recording_key.in_(list(keys)),
                )
            ).scalars()
        )
