"""Group commit: concurrent accepts share a transaction, and each still gets its own answer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from ledger import Delivery, Recording
from ledger.accept import AcceptResult
from ledger.group_commit import GroupCommitter
from providers.base import RecordingRef, WebhookEvent

JOIN_TIMEOUT_S = 20


def saved(delivery: str, recording: str, **hints: Any) -> WebhookEvent:
    ref = RecordingRef(recording_id=recording, hints=hints)
    return WebhookEvent(delivery_id=delivery, event_type="call.recording.saved", recordings=(ref,))


def before_each_commit(committer: GroupCommitter, hook: Callable[[], None]) -> None:
    """Run ``hook`` just before each of the committer's COMMITs (it may block or raise)."""
    commit = committer._commit_transaction

    def hooked(connection: Any) -> None:
        hook()
        commit(connection)

    committer._commit_transaction = hooked  # type: ignore[method-assign]


class HeldFirstCommit:
    """Blocks the first transaction's COMMIT until released, so the next accepts queue up."""

    def __init__(self, committer: GroupCommitter) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self._first = True
        before_each_commit(committer, self._on_commit)

    def _on_commit(self) -> None:
        if self._first:
            self._first = False
            self.entered.set()
            assert self.release.wait(JOIN_TIMEOUT_S)


def run_concurrently(
    committer: GroupCommitter, events: list[WebhookEvent], hold: HeldFirstCommit
) -> list[AcceptResult | BaseException]:
    """Accept ``events[0]`` (held at COMMIT), queue the rest behind it, then release."""
    results: list[AcceptResult | BaseException | None] = [None] * len(events)

    def one(index: int) -> None:
        try:
            results[index] = committer.accept("telnyx", "default", events[index])
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(events))]
    threads[0].start()
    assert hold.entered.wait(JOIN_TIMEOUT_S)
    for thread in threads[1:]:
        thread.start()

    def queued() -> int:
        with committer._cond:
            return len(committer._queue)

    for _ in range(2000):  # bounded: until every other thread has queued behind the commit
        if queued() == len(events) - 1:
            break
        threading.Event().wait(0.005)
    assert queued() == len(events) - 1
    hold.release.set()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_S)
        assert not thread.is_alive()
    return [r for r in results if r is not None]


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def test_concurrent_accepts_share_one_transaction(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    hold = HeldFirstCommit(committer)
    events = [saved(f"d{i}", f"r{i}") for i in range(8)]
    results = run_concurrently(committer, events, hold)
    assert all(isinstance(r, AcceptResult) and r.status == "accepted" for r in results)
    assert committer.batches == 2  # the held one, then the seven that queued behind it
    assert committer.accepts == 8
    assert count(engine, Delivery) == 8
    assert count(engine, Recording) == 8


def test_duplicates_inside_one_batch(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    hold = HeldFirstCommit(committer)
    events = [saved("first", "r0"), saved("d1", "r1"), saved("d1", "r1"), saved("d2", "r1")]
    results = run_concurrently(committer, events, hold)
    assert committer.batches == 2
    statuses = sorted(r.status for r in results if isinstance(r, AcceptResult))
    assert statuses == ["accepted", "accepted", "accepted", "duplicate"]
    ids_for_r1 = {
        tuple(r.recording_ids)
        for r in results[1:]
        if isinstance(r, AcceptResult) and r.status == "accepted"
    }
    assert len(ids_for_r1) == 1  # two deliveries of r1, one row
    assert count(engine, Recording) == 2


def test_a_bad_accept_fails_alone(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    hold = HeldFirstCommit(committer)
    unserialisable = saved("bad", "r-bad", note=object())  # JSON bind fails inside the batch
    events = [saved("first", "r0"), saved("d1", "r1"), unserialisable, saved("d2", "r2")]
    results = run_concurrently(committer, events, hold)
    assert isinstance(results[2], SQLAlchemyError | TypeError)  # psycopg raises TypeError
    good = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, AcceptResult) and r.status == "accepted" for r in good)
    assert count(engine, Recording) == 3
    assert count(engine, Delivery) == 3  # the bad delivery left nothing behind


def test_a_failed_commit_answers_every_waiter(engine: Engine) -> None:
    committer = GroupCommitter(engine, max_batch=3)
    hold = HeldFirstCommit(committer)
    commits = {"seen": 0}

    def fail_once() -> None:
        commits["seen"] += 1
        if commits["seen"] == 2:  # the first shared batch (the held single one was the first)
            raise RuntimeError("injected commit failure")

    before_each_commit(committer, fail_once)
    events = [saved(f"d{i}", f"r{i}") for i in range(6)]
    results = run_concurrently(committer, events, hold)
    # The first shared batch failed at COMMIT and was retried one by one.
    assert committer.batches >= 4
    assert all(isinstance(r, AcceptResult) and r.status == "accepted" for r in results)
    assert count(engine, Recording) == 6


def test_max_batch_must_be_positive(engine: Engine) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommitter(engine, max_batch=0)


def test_accept_batch_matches_returned_rows_to_their_input(engine: Engine) -> None:
    from ledger.accept import accept_batch
    from ledger.models import utcnow

    two = WebhookEvent(
        delivery_id="d4",
        event_type="call.recording.saved",
        recordings=(RecordingRef(recording_id="r2"), RecordingRef(recording_id="r3")),
    )
    ignored = WebhookEvent(delivery_id="d3", event_type="call.hangup")
    with engine.begin() as connection:
        accept_batch(connection, [("telnyx", "default", saved("d0", "r0"))], utcnow())
    batch = [saved("d1", "r1"), saved("d1", "r1"), saved("d2", "r1"), ignored, two]
    batch.append(saved("d5", "r0"))  # a recording committed by an earlier transaction
    with engine.begin() as connection:
        results = accept_batch(connection, [("telnyx", "default", e) for e in batch], utcnow())
    assert [r.status for r in results] == [
        "accepted",
        "duplicate",
        "accepted",
        "ignored",
        "accepted",
        "accepted",
    ]
    first, _, same_recording, _, both, earlier = results
    assert first.new_ids == first.recording_ids and len(first.new_ids) == 1
    assert same_recording.recording_ids == first.recording_ids and same_recording.new_ids == []
    assert len(set(both.new_ids)) == 2 and both.new_ids == both.recording_ids
    assert earlier.new_ids == [] and len(earlier.recording_ids) == 1
    assert count(engine, Recording) == 4
    assert count(engine, Delivery) == 6


def test_a_dead_connection_fails_one_batch_and_is_replaced(engine: Engine) -> None:
    committer = GroupCommitter(engine)
    assert committer.accept("telnyx", "default", saved("d0", "r0")).status == "accepted"
    kept = committer._connection
    assert kept is not None
    kept.dbapi_connection.close()  # as a server restart or a killed backend would leave it
    with pytest.raises(Exception):  # noqa: B017  # whatever the driver raises
        committer.accept("telnyx", "default", saved("d1", "r1"))
    # Not committed, so the provider retries it; the retry gets a fresh connection.
    assert committer.accept("telnyx", "default", saved("d1", "r1")).status == "accepted"
    assert committer._connection is not kept
    assert count(engine, Delivery) == 2
    committer.close()


def test_accepted_rows_hold_exactly_what_was_announced(engine: Engine) -> None:
    """Every column of a batch's rows round-trips, whatever the dialect's insert form."""
    from sqlalchemy.orm import Session

    from ledger.accept import accept_batch
    from ledger.models import utcnow

    hints = {"format": "mp3", "channels": 2, "nested": {"a": [1, None, "é"]}, "flag": True}
    refs = {
        "d1": RecordingRef(recording_id="r1", call_id="c-1", hints=hints),
        "d2": RecordingRef(recording_id=None, lookup=(("call_session_id", "s-2"),)),
        "d3": RecordingRef(recording_id="r3"),
    }
    events = [
        WebhookEvent(delivery_id=d, event_type="call.recording.saved", recordings=(ref,))
        for d, ref in refs.items()
    ]
    now = utcnow()
    with engine.begin() as connection:
        accept_batch(connection, [("telnyx", "acct", e) for e in events], now)
    with Session(engine) as session:
        rows = {row.recording_key: row for row in session.scalars(select(Recording))}
        deliveries = {row.delivery_id: row for row in session.scalars(select(Delivery))}
    assert set(rows) == {"r1", "lookup:call_session_id=s-2", "r3"}
    first, lookup, bare = rows["r1"], rows["lookup:call_session_id=s-2"], rows["r3"]
    assert (first.provider, first.account, first.kind, first.source) == (
        "telnyx",
        "acct",
        "recording",
        "webhook",
    )
    assert (first.state, first.attempts, first.call_id) == ("accepted", 0, "c-1")
    assert first.hints == hints
    assert (lookup.kind, lookup.hints, lookup.call_id) == (
        "lookup",
        {"lookup": {"call_session_id": "s-2"}},
        None,
    )
    assert (bare.hints, bare.parent_id) == ({}, None)
    assert first.created_at == first.updated_at == first.next_attempt_at == now
    assert set(deliveries) == {"d1", "d2", "d3"}
    assert {d.received_at for d in deliveries.values()} == {now}
    assert {d.event_type for d in deliveries.values()} == {"call.recording.saved"}


@pytest.mark.postgres
def test_an_over_long_value_is_refused_not_cut(postgres_url: str) -> None:
    """PostgreSQL: a value longer than its column fails the accept; it is never truncated
    (a cut key could merge two recordings)."""
    from psycopg.errors import StringDataRightTruncation

    from ledger import make_engine, migrate

    migrate(postgres_url)
    engine = make_engine(postgres_url)
    try:
        committer = GroupCommitter(engine)
        with pytest.raises(StringDataRightTruncation):
            committer.accept("telnyx", "default", saved("d" * 257, "r1"))
        with pytest.raises(StringDataRightTruncation):
            committer.accept("telnyx", "default", saved("d1", "r" * 301))
        assert count(engine, Delivery) == 0 and count(engine, Recording) == 0
        committer.close()
    finally:
        engine.dispose()
