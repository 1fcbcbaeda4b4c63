"""``callrec status``, ``show`` and ``redrive`` on a seeded ledger (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from ledger import Recording, RecordingEvent, State
from ledger.account_state import acquire_lease, finish_poll, pause
from ledger.models import utcnow
from tests.fixtures.seeded import Seeded


def test_status_shows_backlog_failures_and_poll_state(seeded: Seeded) -> None:
    seeded.stored("rec-stored")
    seeded.failed("rec-f1", "recording not found (404)")
    seeded.failed("rec-f2", "recording not found (404)")
    seeded.failed("rec-f3", "bad credentials", account="east")
    seeded.accept("rec-waiting")
    token = acquire_lease(seeded.sessions, "telnyx", "default", timedelta(minutes=5))
    assert token is not None
    assert finish_poll(seeded.sessions, "telnyx", "default", token, error="HTTP 401 from list")
    until = utcnow() + timedelta(minutes=10)
    assert pause(seeded.sessions, "twilio", "default", until, "429 Retry-After 600")

    result = seeded.run("status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    default = next(line for line in lines if line.startswith("telnyx") and " default " in line)
    # accepted retrying fetching stored failed resolved, then the oldest waiting row's age
    assert default.split()[2:8] == ["1", "0", "0", "1", "2", "0"]
    assert default.split()[8] != "-"
    east = next(line for line in lines if line.startswith("telnyx") and " east " in line)
    assert east.split()[2:9] == ["0", "0", "0", "0", "1", "0", "-"]
    assert "telnyx/default       2  recording not found (404)" in result.output
    assert "telnyx/east       1  bad credentials" in result.output
    assert "last error: HTTP 401 from list" in result.output
    assert "twilio/default" in result.output and "PAUSED until" in result.output


def test_status_of_an_empty_ledger(seeded: Seeded) -> None:
    result = seeded.run("status")
    assert result.exit_code == 0
    assert "the ledger is empty" in result.output
    assert "no account has been polled yet" in result.output


def test_show_prints_the_row_and_its_history(seeded: Seeded) -> None:
    key = seeded.stored("rec-shown")
    with seeded.sessions() as session:
        row_id = session.execute(
            select(Recording.id).where(Recording.recording_key == "rec-shown")
        ).scalar_one()
    result = seeded.run("show", str(row_id))
    assert result.exit_code == 0, result.output
    assert f"storage_key: {key}" in result.output
    assert "state: stored" in result.output
    assert "attempt 1  fetching" in result.output and "attempt 1  stored" in result.output
    missing = seeded.run("show", "999999")
    assert missing.exit_code == 1 and "no ledger row 999999" in missing.output


def _events(seeded: Seeded, recording_id: int) -> list[str]:
    with seeded.sessions() as session:
        return [
            f"{event.state}: {event.detail}"
            for event in session.execute(
                select(RecordingEvent)
                .where(RecordingEvent.recording_id == recording_id)
                .order_by(RecordingEvent.id)
            ).scalars()
        ]


def test_redrive_one_failed_row(seeded: Seeded) -> None:
    row_id = seeded.failed("rec-failed", "gave up after 8 attempts: HTTP 503")
    result = seeded.run("redrive", str(row_id))
    assert result.exit_code == 0, result.output
    assert f"re-drove row {row_id} (was failed after 1 attempts); published 1" in result.output
    row = seeded.row(row_id)
    assert (row.state, row.attempts) == (State.ACCEPTED, 0)
    assert row.last_error  # kept until a new attempt ends; the history says it was re-driven
    assert row.enqueued_at is not None  # published through the broker
    last = _events(seeded, row_id)[-1]
    assert last.startswith("accepted: re-driven by ")
    assert "(was failed after 1 attempt(s): gave up after 8 attempts: HTTP 503)" in last
    assert "re-driven by" in seeded.run("show", str(row_id)).output


def test_redrive_refuses_stored_and_unknown_rows(seeded: Seeded) -> None:
    seeded.stored("rec-stored")
    with seeded.sessions() as session:
        stored_id = session.execute(
            select(Recording.id).where(Recording.recording_key == "rec-stored")
        ).scalar_one()
    before = _events(seeded, stored_id)
    result = seeded.run("redrive", str(stored_id))
    assert result.exit_code == 1
    assert f"row {stored_id} not re-driven: it is stored" in result.output
    assert seeded.row(stored_id).state == State.STORED
    assert _events(seeded, stored_id) == before
    unknown = seeded.run("redrive", "424242")
    assert unknown.exit_code == 1 and "no ledger row 424242" in unknown.output
    usage = seeded.run("redrive")
    assert usage.exit_code == 2 and "either a recording id or --failed" in usage.output


def test_redrive_failed_with_filters(seeded: Seeded) -> None:
    old = seeded.failed("rec-old", "HTTP 404")
    default = seeded.failed("rec-default", "HTTP 404")
    east = seeded.failed("rec-east", "HTTP 401", account="east")
    twilio = seeded.failed("RE-twilio", "HTTP 500", provider="twilio")
    waiting = seeded.accept("rec-waiting")
    seeded.stored("rec-stored")
    with seeded.sessions.begin() as session:
        session.execute(
            update(Recording)
            .where(Recording.id == old)
            .values(updated_at=utcnow() - timedelta(days=3))
        )
    since = (utcnow() - timedelta(days=1)).isoformat()

    one = seeded.run("redrive", "--failed", "--provider", "telnyx", "--account", "east")
    assert one.exit_code == 0, one.output
    assert "re-drove 1 failed rows; published 1" in one.output
    assert seeded.row(east).state == State.ACCEPTED

    recent = seeded.run("redrive", "--failed", "--since", since)
    assert recent.exit_code == 0, recent.output
    assert "re-drove 2 failed rows; published 2" in recent.output
    assert {seeded.row(i).state for i in (default, twilio)} == {State.ACCEPTED}
    assert seeded.row(old).state == State.FAILED  # failed before --since

    rest = seeded.run("redrive", "--failed")
    assert "re-drove 1 failed rows" in rest.output
    assert seeded.row(old).state == State.ACCEPTED
    assert seeded.row(waiting).attempts == 0 and seeded.row(waiting).state == State.ACCEPTED
    assert "re-drove 0 failed rows" in seeded.run("redrive", "--failed").output
