"""Re-driving a failed recording, on SQLite and PostgreSQL: back to waiting with its attempts
reset, an audit event, picked up by the relay's query and claimable; nothing else changes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from ledger import Recording, RecordingEvent, State, claim, make_session_factory, unpublished_rows
from ledger.redrive import redrive
from tests.fixtures.ledger_rows import accepted_row, failed_row, stored_row


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def row(sessions: sessionmaker[Session], row_id: int) -> Recording:
    with sessions() as session:
        found = session.get(Recording, row_id)
        assert found is not None
        return found


def events(sessions: sessionmaker[Session], row_id: int) -> list[tuple[str, int, str | None]]:
    with sessions() as session:
        return [
            (e.state, e.attempt, e.detail)
            for e in session.execute(
                select(RecordingEvent)
                .where(RecordingEvent.recording_id == row_id)
                .order_by(RecordingEvent.id)
            ).scalars()
        ]


def test_a_failed_row_waits_again_with_attempts_reset_and_an_audit_event(
    sessions: sessionmaker[Session],
) -> None:
    row_id = failed_row(sessions, "recording not found (404)")
    assert unpublished_rows(sessions) == []

    assert redrive(sessions, row_id, reason="ticket 42, by ops") is True

    after = row(sessions, row_id)
    assert (after.state, after.attempts, after.enqueued_at) == (State.ACCEPTED, 0, None)
    assert after.claim_token is None
    assert after.last_error == "recording not found (404)"  # until a new attempt ends
    assert events(sessions, row_id)[-1] == ("accepted", 0, "re-driven: ticket 42, by ops")
    assert unpublished_rows(sessions) == [row_id]  # the relay publishes it
    held = claim(sessions, row_id, timedelta(seconds=60))
    assert held is not None and held.attempt == 1


def test_only_failed_rows_are_re_driven_and_only_once(sessions: sessionmaker[Session]) -> None:
    failed = failed_row(sessions, "boom")
    stored = stored_row(sessions)
    waiting = accepted_row(sessions)
    assert redrive(sessions, failed, reason="first") is True
    assert redrive(sessions, failed, reason="second") is False
    assert redrive(sessions, stored, reason="x") is False
    assert redrive(sessions, waiting, reason="x") is False
    assert redrive(sessions, 987654, reason="x") is False
    assert row(sessions, stored).state == State.STORED
    assert [e for e in events(sessions, failed) if e[2] and e[2].startswith("re-driven")] == [
        ("accepted", 0, "re-driven: first")
    ]
    assert not any(e[2] and e[2].startswith("re-driven") for e in events(sessions, stored))
