"""Record what a provider announced, idempotently: the step that makes a webhook "accepted".

A delivery is new or a duplicate by its (provider, account, delivery_id); a recording row is
created once per (provider, account, recording_key) and found again afterwards (dj-stripe's
"insert, and on conflict return the existing row"). Both happen in one transaction, so a 2xx
is only ever sent for something committed.

This is the webhook's hot path. SQLAlchemy owns the schema (table and column names, and the
column types' bind processors, come from ``ledger.models``), but the statements of a batch are
rendered once per dialect and row count as DBAPI SQL and run on the DBAPI cursor: SQLAlchemy's
per-execution work (parameter processing, result set-up, events) cost more CPU than SQLite's
own (bench/request_cpu.py, docs/PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import Delivery, Recording, State, utcnow
from providers.base import RecordingRef, WebhookEvent

__all__ = [
    "AcceptResult",
    "AcceptSql",
    "Announcement",
    "accept_batch",
    "accept_event",
    "accept_in",
    "accept_refs",
    "accept_rows",
    "engine_of",
    "known_keys",
    "sql_for",
]


@dataclass
class AcceptResult:
    status: str  # "accepted", "duplicate" or "ignored"
    recording_ids: list[int] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)  # rows created now: to be published


DELIVERIES = cast(Table, Delivery.__table__)
RECORDINGS = cast(Table, Recording.__table__)

#: One announcement to accept: (provider, account, verified event).
Announcement = tuple[str, str, WebhookEvent]

#: (columns set, in the order of each row's parameters; columns returned: natural key [+ id]).
_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    DELIVERIES.name: (
        ("provider", "account", "delivery_id", "event_type", "received_at"),
        ("provider", "account", "delivery_id"),
    ),
    RECORDINGS.name: (
        (
            "provider",
            "account",
            "recording_key",
            "kind",
            "source",
            "state",
            "attempts",
            "call_id",
            "hints",
            "parent_id",
            "created_at",
            "updated_at",
            "next_attempt_at",
        ),
        ("provider", "account", "recording_key", "id"),
    ),
}


def _identity(value: Any) -> Any:
    return value


class AcceptSql:
    """The accept statements of one dialect as DBAPI SQL, and the bind processors they need.

    ``INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING …`` (SQLite ≥ 3.35 and
    PostgreSQL), rendered from the ledger's tables once per row count; the natural key comes
    back so rows can be matched to the input (RETURNING's order is not guaranteed).
    """

    def __init__(self, dialect: Dialect) -> None:
        if dialect.name not in ("sqlite", "postgresql"):
            raise NotImplementedError(f"the ledger does not support {dialect.name}")
        self._quote = dialect.identifier_preparer.quote
        self._marker = "?" if dialect.paramstyle == "qmark" else "%s"
        self._inserts: dict[tuple[str, int], str] = {}
        for table in (DELIVERIES, RECORDINGS):
            columns, returning = _COLUMNS[table.name]
            unknown = [name for name in (*columns, *returning) if name not in table.c]
            if unknown:  # models.py changed without this module
                raise LookupError(f"{table.name} has no column {unknown[0]!r}")
        #: The UTCDateTime and JSON columns' bind processors (what SQLAlchemy would apply).
        self.time = self._processor(dialect, "created_at")
        self.json = self._processor(dialect, "hints")
        m, q = self._marker, self._quote
        # Identifiers come from ledger.models (quoted by the dialect); values are parameters.
        self.find_recording = (
            f"SELECT {q('id')} FROM {q(RECORDINGS.name)} WHERE {q('provider')} = {m} "  # noqa: S608
            f"AND {q('account')} = {m} AND {q('recording_key')} = {m}"
        )

    @staticmethod
    def _processor(dialect: Dialect, column: str) -> Callable[[Any], Any]:
        kind = RECORDINGS.c[column].type.dialect_impl(dialect)
        return kind.bind_processor(dialect) or _identity

    def insert(self, table: Table, rows: int) -> str:
        """The multi-row insert of ``rows`` rows into ``table`` (deliveries or recordings)."""
        sql = self._inserts.get((table.name, rows))
        if sql is None:
            columns, returning = _COLUMNS[table.name]
            q = self._quote
            group = "(" + ", ".join([self._marker] * len(columns)) + ")"
            sql = (  # identifiers from ledger.models; values are parameters
                f"INSERT INTO {q(table.name)} ({', '.join(q(c) for c in columns)}) "  # noqa: S608
                f"VALUES {', '.join([group] * rows)} ON CONFLICT DO NOTHING "
                f"RETURNING {', '.join(q(c) for c in returning)}"
            )
            self._inserts[(table.name, rows)] = sql
        return sql


_SQL: dict[tuple[str, str], AcceptSql] = {}


def sql_for(dialect: Dialect) -> AcceptSql:
    """The accept statements of ``dialect`` (built on first use, then shared)."""
    key = (dialect.name, dialect.driver)
    found = _SQL.get(key)
    if found is None:
        found = _SQL[key] = AcceptSql(dialect)
    return found


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    bind = sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def _insert(cursor: Any, sql: AcceptSql, table: Table, rows: list[tuple[Any, ...]]) -> list[Any]:
    """Run one multi-row insert of ``rows``; the returned rows (those inserted now)."""
    cursor.execute(sql.insert(table, len(rows)), [value for row in rows for value in row])
    return list(cursor.fetchall())


def _upsert_refs(
    cursor: Any,
    sql: AcceptSql,
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
    stamp = sql.time(now)
    rows = []
    for _, provider, account, ref in entries:
        hints = dict(ref.hints)
        if ref.lookup:
            hints["lookup"] = dict(ref.lookup)
        kind = "recording" if ref.recording_id else "lookup"
        rows.append(
            (provider, account, ref.ledger_key, kind, source, State.ACCEPTED, 0, ref.call_id,
             sql.json(hints), parent_id, stamp, stamp, stamp)
        )  # fmt: skip
    created = {(row[0], row[1], row[2]): row[3] for row in _insert(cursor, sql, RECORDINGS, rows)}
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
            cursor.execute(sql.find_recording, key)
            existing = int(cursor.fetchone()[0])
            seen[key] = existing
        result.recording_ids.append(existing)


def accept_rows(
    cursor: Any, sql: AcceptSql, announcements: Sequence[Announcement], now: datetime
) -> list[AcceptResult]:
    """Record verified deliveries and their recordings with a DBAPI ``cursor`` whose connection
    is inside the caller's transaction (the caller commits).

    Two statements for the whole batch (deliveries, then recordings), whatever its size. A
    delivery already recorded, or named twice in the batch, is a ``duplicate`` after the first.
    """
    if not announcements:
        return []
    stamp = sql.time(now)
    rows = [
        (provider, account, event.delivery_id, event.event_type[:128], stamp)
        for provider, account, event in announcements
    ]
    inserted = {(row[0], row[1], row[2]) for row in _insert(cursor, sql, DELIVERIES, rows)}
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
    _upsert_refs(cursor, sql, entries, "webhook", now, None)
    return results


def accept_batch(
    connection: Connection, announcements: Sequence[Announcement], now: datetime
) -> list[AcceptResult]:
    """:func:`accept_rows` inside the caller's SQLAlchemy transaction on ``connection``."""
    cursor = connection.connection.cursor()
    try:
        return accept_rows(cursor, sql_for(connection.dialect), announcements, now)
    finally:
        cursor.close()


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
    entries = [(result, provider, account, ref) for ref in refs]
    with engine_of(sessions).begin() as connection:
        cursor = connection.connection.cursor()
        try:
            _upsert_refs(cursor, sql_for(connection.dialect), entries, source, utcnow(), parent_id)
        finally:
            cursor.close()
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
