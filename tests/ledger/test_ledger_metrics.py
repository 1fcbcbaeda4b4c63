"""The ledger gauges of ``/metrics`` (``config.metrics.LedgerCollector``) on SQLite and
PostgreSQL: backlog by state, oldest pending age, completeness and expected-but-missing."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, update

from config.metrics import LedgerCollector
from ledger import Recording, State, accept_refs, make_session_factory
from ledger.models import utcnow
from providers.base import RecordingRef
from tests.fixtures.metrics import parse

EAST = {"provider": "telnyx", "account": "east"}
WEST = {"provider": "twilio", "account": "west"}


def test_gauges_are_read_from_the_ledger_at_scrape_time(engine: Engine) -> None:
    sessions = make_session_factory(engine)
    east = [RecordingRef(recording_id=f"e{i}") for i in range(4)]
    ids = accept_refs(sessions, "telnyx", "east", east, source="poll").new_ids
    lookup = RecordingRef(recording_id=None, lookup=(("call_session_id", "c1"),))
    accept_refs(sessions, "twilio", "west", [lookup], source="webhook")
    now = utcnow()
    with sessions.begin() as session:
        for row_id, values in (
            (ids[0], {"state": State.STORED}),
            (ids[1], {"state": State.FAILED}),
            (ids[2], {"state": State.RETRYING, "created_at": now - timedelta(minutes=30)}),
        ):
            session.execute(update(Recording).where(Recording.id == row_id).values(**values))
    registry = CollectorRegistry()
    registry.register(LedgerCollector(sessions, missing_after_minutes=10))
    got = parse(generate_latest(registry).decode())

    assert got.value("callrec_ledger_backlog", **EAST, state="retrying") == 1
    assert got.value("callrec_ledger_backlog", **EAST, state="accepted") == 1
    assert got.value("callrec_ledger_backlog", **WEST, state="accepted") == 1  # lookups count
    assert got.total("callrec_ledger_backlog") == 3
    assert 30 * 60 <= got.value("callrec_ledger_oldest_pending_age_seconds", **EAST) < 31 * 60
    assert got.value("callrec_recordings", **EAST, stage="announced") == 4
    assert got.value("callrec_recordings", **EAST, stage="stored") == 1
    assert got.value("callrec_recordings", **EAST, stage="failed") == 1
    assert got.value("callrec_recordings_missing", **EAST) == 1  # the 30-minute-old one
    assert got.total("callrec_recordings", **WEST) == 0  # a lookup is not a recording
