"""Record what a provider announced, idempotently: the step that makes a webhook "accepted".

A delivery is new or a duplicate by its (provider, account, delivery_id); a recording row is
created once per (provider, account, recording_key) and found again afterwards (dj-stripe's
"insert, and on conflict return the existing row"). Both happen in one transaction, so a 2xx
is only ever sent for something committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ledger.models import Delivery, Recording, State, utcnow
from providers.base import RecordingRef, WebhookEvent

__all__ = ["AcceptResult", "accept_event", "accept_refs"]


@dataclass
class AcceptResult:
    status: str  # "accepted", "duplicate" or "ignored"
    recording_ids: list[int] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)  # rows created now: publish these


def _insert_ignoring_conflict(
    session: Session, model: type, values: dict[str, object]
) -> int | None:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id; None when the row already existed."""
    dialect = session.get_bind().dialect.name
    factory = postgresql.insert if dialect == "postgresql" else sqlite.insert
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - guarded by settings
        factory = insert  # type: ignore[assignment]
    statement = factory(model).values(**values).on_conflict_do_nothing().returning(model.id)  # type: ignore[attr-defined]
    return session.execute(statement).scalar_one_or_none()


def _upsert_refs(
    session: Session,
    provider: str,
    account: str,
    refs: Sequence[RecordingRef],
    source: str,
    now: datetime,
    parent_id: int | None,
    result: AcceptResult,
) -> None:
    for ref in refs:
        new_id = _insert_ignoring_conflict(
            session,
            Recording,
            {
                "provider": provider,
                "account": account,
                "recording_key": ref.ledger_key,
                "kind": "recording" if ref.recording_id else "lookup",
                "source": source,
                "state": State.ACCEPTED,
                "attempts": 0,
                "call_id": ref.call_id,
                "hints": {
                    **dict(ref.hints),
                    **({"lookup": dict(ref.lookup)} if ref.lookup else {}),
                },
                "parent_id": parent_id,
                "created_at": now,
                "updated_at": now,
                "next_attempt_at": now,
            },
        )
        if new_id is None:
            existing = session.execute(
                select(Recording.id).where(
                    Recording.provider == provider,
                    Recording.account == account,
                    Recording.recording_key == ref.ledger_key,
                )
            ).scalar_one()
            result.recording_ids.append(existing)
        else:
            result.recording_ids.append(new_id)
            result.new_ids.append(new_id)


def accept_event(
    sessions: sessionmaker[Session], provider: str, account: str, event: WebhookEvent
) -> AcceptResult:
    """Record a verified webhook delivery and the recordings it announces."""
    now = utcnow()
    with sessions.begin() as session:
        delivery = _insert_ignoring_conflict(
            session,
            Delivery,
            {
                "provider": provider,
                "account": account,
                "delivery_id": event.delivery_id,
                "event_type": event.event_type[:128],
                "received_at": now,
            },
        )
        if delivery is None:
            return AcceptResult("duplicate")
        if not event.recordings:
            return AcceptResult("ignored")
        result = AcceptResult("accepted")
        _upsert_refs(session, provider, account, event.recordings, "webhook", now, None, result)
        return result


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
    with sessions.begin() as session:
        _upsert_refs(session, provider, account, refs, source, utcnow(), parent_id, result)
    return result
