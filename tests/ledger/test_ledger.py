"""The ledger's promises on SQLite and PostgreSQL: idempotent accept, one claim at a time,
transitions only by the claim holder, and the sweeper's selection rules."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from ledger import (
    Recording,
    State,
    accept_event,
    accept_refs,
    claim,
    finish,
    make_session_factory,
    mark_enqueued,
    release_for_retry,
    rows_to_publish,
)
from ledger.models import utcnow
from providers.base import RecordingRef, WebhookEvent

LEASE = timedelta(seconds=60)
GRACE = timedelta(seconds=10)


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


def event(delivery: str, *recording_ids: str) -> WebhookEvent:
    return WebhookEvent(
        delivery_id=delivery,
        event_type="call.recording.saved",
        recordings=tuple(RecordingRef(recording_id=r) for r in recording_ids),
    )


def age(sessions: sessionmaker[Session], row_id: int, **seconds_ago: float) -> None:
    """Move a row's timestamps into the past (instead of sleeping)."""
    values = {name: utcnow() - timedelta(seconds=ago) for name, ago in seconds_ago.items()}
    with sessions.begin() as session:
        session.execute(update(Recording).where(Recording.id == row_id).values(**values))


def test_accept_is_idempotent_per_delivery_and_per_recording(sessions: sessionmaker) -> None:
    first = accept_event(sessions, "telnyx", "default", event("d1", "r1"))
    assert first.status == "accepted" and len(first.new_ids) == 1
    assert accept_event(sessions, "telnyx", "default", event("d1", "r1")).status == "duplicate"
    again = accept_event(sessions, "telnyx", "default", event("d2", "r1"))
    assert again.status == "accepted" and again.new_ids == []
    assert again.recording_ids == first.recording_ids
    other_account = accept_event(sessions, "telnyx", "acme", event("d1", "r1"))
    assert other_account.new_ids and other_account.new_ids != first.new_ids


def test_ignored_events_record_the_delivery_only(sessions: sessionmaker) -> None:
    assert accept_event(sessions, "telnyx", "default", event("d9")).status == "ignored"
    assert accept_event(sessions, "telnyx", "default", event("d9")).status == "duplicate"


def test_concurrent_accepts_of_one_delivery_make_one_row(sessions: sessionmaker) -> None:
    statuses: list[str] = []

    def go() -> None:
        statuses.append(accept_event(sessions, "telnyx", "default", event("dx", "rx")).status)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(statuses) == ["accepted"] + ["duplicate"] * 7


def test_only_one_of_many_concurrent_claims_wins(sessions: sessionmaker) -> None:
    (row_id,) = accept_refs(sessions, "telnyx", "default", [RecordingRef("r")], source="t").new_ids
    winners: list[object] = []

    def go() -> None:
        winners.append(claim(sessions, row_id, LEASE))

    threads = [threading.Thread(target=go) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len([w for w in winners if w is not None]) == 1


def test_final_rows_cannot_be_claimed_and_lost_claims_change_nothing(
    sessions: sessionmaker,
) -> None:
    (row_id,) = accept_refs(sessions, "telnyx", "default", [RecordingRef("r")], source="t").new_ids
    held = claim(sessions, row_id, LEASE)
    assert held is not None and held.attempt == 1
    assert claim(sessions, row_id, LEASE) is None  # busy
    age(sessions, row_id, claimed_at=120)  # the holder died: its lease ran out
    taker = claim(sessions, row_id, LEASE)
    assert taker is not None and taker.attempt == 2
    assert finish(sessions, held, State.STORED) is False  # the first holder lost it
    assert finish(sessions, taker, State.STORED, storage_key="k", size_bytes=1, sha256="0" * 64)
    assert claim(sessions, row_id, LEASE) is None  # final


def test_retry_waits_until_due(sessions: sessionmaker) -> None:
    (row_id,) = accept_refs(sessions, "telnyx", "default", [RecordingRef("r")], source="t").new_ids
    held = claim(sessions, row_id, LEASE)
    assert held is not None
    assert release_for_retry(sessions, held, "HTTP 503", 60) is not None
    assert claim(sessions, row_id, LEASE) is None  # not due yet
    age(sessions, row_id, next_attempt_at=1)
    again = claim(sessions, row_id, LEASE)
    assert again is not None and again.attempt == 2


def test_sweeper_selection_rules(sessions: sessionmaker) -> None:
    ids = accept_refs(
        sessions, "telnyx", "default", [RecordingRef(f"r{i}") for i in range(5)], source="t"
    ).new_ids
    fresh, unpublished, published, lost, stuck = ids
    assert rows_to_publish(sessions, LEASE, GRACE) == []  # all within the relay's grace
    age(sessions, unpublished, updated_at=30)
    mark_enqueued(sessions, [published, lost, stuck])
    age(sessions, published, updated_at=30)
    age(sessions, lost, updated_at=300, enqueued_at=300)  # a message long gone unconsumed
    assert claim(sessions, stuck, LEASE) is not None
    age(sessions, stuck, claimed_at=300, enqueued_at=300)  # its worker died mid-capture
    assert rows_to_publish(sessions, LEASE, GRACE) == [unpublished, lost, stuck]
    assert fresh not in rows_to_publish(sessions, LEASE, GRACE)
    mark_enqueued(sessions, [unpublished, lost, stuck])
    assert rows_to_publish(sessions, LEASE, GRACE) == []  # published: not again until stale


def _published_rows(sessions: sessionmaker, source: str, *enqueued_ago: float) -> list[int]:
    """Rows of ``source`` whose wake-up was published ``enqueued_ago`` seconds ago each."""
    ids = accept_refs(
        sessions,
        "telnyx",
        "default",
        [RecordingRef(f"{source}-{i}-{ago}") for i, ago in enumerate(enqueued_ago)],
        source=source,
    ).new_ids
    mark_enqueued(sessions, ids)
    for row_id, ago in zip(ids, enqueued_ago, strict=True):
        age(sessions, row_id, updated_at=ago, enqueued_at=ago)
    return ids


def test_a_deep_queue_keeps_its_stale_rows_from_being_republished(sessions: sessionmaker) -> None:
    """Behind a backlog a message older than the lease is still queued: the sweeper republishes
    only as many of a lane's stale rows as its queue cannot account for, oldest first."""
    newest, middle, oldest = _published_rows(sessions, "webhook", 300, 400, 500)
    _published_rows(sessions, "webhook", 5)  # published, not stale: still counts as waiting
    assert rows_to_publish(sessions, LEASE, GRACE) == [newest, middle, oldest]  # queue unknown
    assert rows_to_publish(sessions, LEASE, GRACE, queued={"fresh": 4, "backfill": 0}) == []
    assert rows_to_publish(sessions, LEASE, GRACE, queued={"fresh": 9, "backfill": 0}) == []
    assert rows_to_publish(sessions, LEASE, GRACE, queued={"fresh": 2, "backfill": 0}) == [
        middle,
        oldest,
    ]
    assert rows_to_publish(sessions, LEASE, GRACE, queued={"fresh": 0, "backfill": 0}) == [
        newest,
        middle,
        oldest,
    ]
    assert rows_to_publish(sessions, LEASE, GRACE, queued={"fresh": 2}, limit=1) == [oldest]


def test_each_lane_is_accounted_by_its_own_queue(sessions: sessionmaker) -> None:
    """A deep fresh queue does not hide a lost backfill message, nor the other way round."""
    (fresh,) = _published_rows(sessions, "webhook", 300)
    (backfilled,) = _published_rows(sessions, "backfill", 300)
    assert rows_to_publish(sessions, LEASE, GRACE, queued={"fresh": 50, "backfill": 0}) == [
        backfilled
    ]
    assert rows_to_publish(sessions, LEASE, GRACE, queued={"fresh": 0, "backfill": 50}) == [fresh]


def test_unpublished_and_expired_claims_do_not_depend_on_the_queue(sessions: sessionmaker) -> None:
    unpublished, stuck = accept_refs(
        sessions, "telnyx", "default", [RecordingRef("u"), RecordingRef("s")], source="t"
    ).new_ids
    age(sessions, unpublished, updated_at=30)
    mark_enqueued(sessions, [stuck])
    assert claim(sessions, stuck, LEASE) is not None
    age(sessions, stuck, claimed_at=300, enqueued_at=300)
    deep = {"fresh": 1000, "backfill": 1000}
    assert rows_to_publish(sessions, LEASE, GRACE, queued=deep) == [unpublished, stuck]


def test_a_claim_carries_the_accounts_pause_only_while_it_runs(
    sessions: sessionmaker[Session],
) -> None:
    """The capture reads the rate-limit pause from the claim (no second transaction)."""
    from ledger.account_state import pause

    first, second = accept_refs(
        sessions,
        "telnyx",
        "default",
        [RecordingRef(recording_id="p-1"), RecordingRef(recording_id="p-2")],
        source="poll",
    ).new_ids
    held = claim(sessions, first, LEASE)
    assert held is not None and held.paused_until is None
    until = utcnow() + timedelta(minutes=5)
    pause(sessions, "telnyx", "default", until, "429")
    paused = claim(sessions, second, LEASE)
    assert paused is not None and paused.paused_until == until
    assert paused.attempt == 1 and paused.recording_key == "p-2"
