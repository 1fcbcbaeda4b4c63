"""The operators' overview of the ledger, on SQLite and PostgreSQL: counts per account and
window, time to capture, backlog, and the latest failures with redacted reasons."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from ledger import Recording, accept_event, make_session_factory
from ledger.models import utcnow
from ledger.overview import overview, percentile
from providers.base import RecordingRef, WebhookEvent
from tests.fixtures.ledger_rows import accepted_row, failed_row, stored_row

NOW = utcnow()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def at(sessions: sessionmaker[Session], row_id: int, **ago: timedelta) -> None:
    """Set a row's timestamps to ``NOW - ago`` (stored rows: stored_at = updated_at)."""
    values: dict[str, datetime] = {name: NOW - delta for name, delta in ago.items()}
    if "updated_at" in values:
        values["stored_at"] = values["updated_at"]
    with sessions.begin() as session:
        session.execute(update(Recording).where(Recording.id == row_id).values(**values))


def test_counts_times_backlog_and_failures_per_account_and_window(
    sessions: sessionmaker[Session],
) -> None:
    minutes = lambda n: timedelta(minutes=n)  # noqa: E731
    old = stored_row(sessions)  # stored 10 s after accept, two hours ago
    at(sessions, old, created_at=minutes(120), updated_at=minutes(120) - timedelta(seconds=10))
    recent = stored_row(sessions)  # stored 4 s after accept, half an hour ago
    at(sessions, recent, created_at=minutes(30), updated_at=minutes(30) - timedelta(seconds=4))
    fail = failed_row(
        sessions, "GET https://b.s3.amazonaws.com/r.mp3?X-Amz-Signature=abc for +15551234567"
    )
    at(sessions, fail, created_at=minutes(12), updated_at=minutes(10))
    waiting = accepted_row(sessions)
    at(sessions, waiting, created_at=minutes(5), updated_at=minutes(5))
    lookup = WebhookEvent("d-lookup", "call.recording.saved", (RecordingRef(None, (("c", "1"),)),))
    accept_event(sessions, "telnyx", "default", lookup)  # a lookup: backlog, not "received"
    ancient = failed_row(sessions, "old failure", provider="twilio", account="east")
    at(sessions, ancient, created_at=timedelta(days=3), updated_at=timedelta(days=3))

    report = overview(sessions, [("quo", "default"), ("telnyx", "default")], now=NOW)

    # Listed: configured accounts, and any with rows in a window or waiting (not twilio/east).
    assert [(a.provider, a.account) for a in report.accounts] == [
        ("quo", "default"),
        ("telnyx", "default"),
    ]
    quo, telnyx = report.accounts
    assert quo.backlog == 0 and quo.windows["last day"].received == 0
    hour, day = telnyx.windows["last hour"], telnyx.windows["last day"]
    assert (hour.received, hour.stored, hour.failed) == (3, 1, 1)
    assert (day.received, day.stored, day.failed) == (4, 2, 1)
    assert (hour.p50_seconds, hour.p99_seconds) == (pytest.approx(4), pytest.approx(4))
    assert (day.p50_seconds, day.p99_seconds) == (pytest.approx(4), pytest.approx(10))
    assert not day.sampled
    assert telnyx.backlog == 2  # the waiting recording and the lookup
    assert telnyx.oldest_backlog_seconds == pytest.approx(300, abs=5)

    assert [f.id for f in report.failures] == [fail, ancient]
    reason = report.failures[0].reason
    assert "X-Amz-Signature" not in reason and "5551234567" not in reason
    assert "https://b.s3.amazonaws.com/r.mp3?[redacted]" in reason and "[phone]" in reason
    assert (report.failures[1].provider, report.failures[1].account) == ("twilio", "east")
    assert overview(sessions, failures=1, now=NOW).failures[0].id == fail


def test_percentile_is_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99)) == (50.0, 99.0)
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) is None
