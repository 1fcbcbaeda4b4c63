"""The ledger's tables: the truth about every recording callrec has accepted.

``recordings``: one row per recording, unique on (provider, account, recording_key). A row whose
webhook lacked the provider's recording id is a *lookup* row (``kind="lookup"``, key
``lookup:call_session_id=…``) that the worker resolves into recording rows.

States::

    accepted ──claim──▶ fetching ──▶ stored            (final)
       ▲                   │  └────▶ failed            (final, with reason; re-drivable)
       │                   │  └────▶ resolved          (final, lookup rows only)
       └──── retrying ◀────┘        (next_attempt_at says when)

``deliveries``: one row per webhook delivery, unique on (provider, account, delivery_id), so a
redelivered webhook is acknowledged as a duplicate without touching the recording.
``recording_events``: the history of a row's transitions, for operators.
``account_state``: one row per (provider, account) for reconciliation and rate limits: the poll
watermark, the poll lease, the last poll's outcome, and "paused until" after a 429.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "FINAL_STATES",
    "AccountState",
    "Base",
    "Delivery",
    "Recording",
    "RecordingEvent",
    "Source",
    "State",
    "utcnow",
]

Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class State:
    ACCEPTED = "accepted"
    FETCHING = "fetching"
    RETRYING = "retrying"
    STORED = "stored"
    FAILED = "failed"
    RESOLVED = "resolved"


class Source:
    """Where a row came from. ``BACKFILL`` rows (``callrec backfill``) and the rows their lookups
    resolve into are captured on their own queue (``ledger.publish``), so a backfill never
    queues ahead of a fresh recording."""

    WEBHOOK = "webhook"
    POLL = "poll"
    LOOKUP = "lookup"
    BACKFILL = "backfill"


FINAL_STATES = frozenset({State.STORED, State.FAILED, State.RESOLVED})
WAITING_STATES = (State.ACCEPTED, State.RETRYING)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python; naive UTC in the column on every database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if isinstance(value, datetime) else value


class Base(DeclarativeBase):
    pass


class Recording(Base):
    __tablename__ = "recordings"
    __table_args__ = (
        UniqueConstraint("provider", "account", "recording_key", name="uq_recordings_key"),
        Index("ix_recordings_state_enqueued", "state", "enqueued_at"),
        Index("ix_recordings_state_updated", "state", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    recording_key: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16), default="recording")
    source: Mapped[str] = mapped_column(String(16), default=Source.WEBHOOK)
    state: Mapped[str] = mapped_column(String(16), default=State.ACCEPTED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    call_id: Mapped[str | None] = mapped_column(String(256))
    hints: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parent_id: Mapped[int | None] = mapped_column(Id, ForeignKey("recordings.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim_token: Mapped[str | None] = mapped_column(String(36))
    last_error: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str | None] = mapped_column(String(1024))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    stored_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("provider", "account", "delivery_id", name="uq_deliveries_key"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    delivery_id: Mapped[str] = mapped_column(String(256))
    event_type: Mapped[str] = mapped_column(String(128))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RecordingEvent(Base):
    __tablename__ = "recording_events"
    __table_args__ = (Index("ix_recording_events_recording", "recording_id", "id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    recording_id: Mapped[int] = mapped_column(Id, ForeignKey("recordings.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    state: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)


class AccountState(Base):
    """Reconciliation and rate-limit state of one account (ledger/account_state.py)."""

    __tablename__ = "account_state"
    __table_args__ = (UniqueConstraint("provider", "account", name="uq_account_state_key"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    #: Everything the provider lists as created at or before this instant has been listed.
    watermark: Mapped[datetime | None] = mapped_column(UTCDateTime())
    poll_scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_poll_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_found: Mapped[int | None] = mapped_column(Integer)
    last_new: Mapped[int | None] = mapped_column(Integer)
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    pause_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
