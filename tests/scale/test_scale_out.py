"""Scale-out on PostgreSQL + RabbitMQ + S3 (moto): two gunicorn web processes, five Celery
workers laid out per queue (three on captures), two beats and two relays share one ledger, one
broker and one bucket (``cluster.py``; docs/DEPLOY.md "Production layout").

* webhooks spread over both web processes, the same webhook to both at once, and the
  reconciliation poll listing the same recordings: each stored once, by one successful
  attempt, the work spread over the three capture workers; two beats ticking and two relays
  publishing the same rows cost duplicate messages, never a duplicate capture or poll;
* a backfill of slow recordings on ``<prefix>.capture.backfill`` never holds up a fresh
  webhook's capture on ``<prefix>.capture``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from ledger import accept_refs, mark_enqueued
from ledger.account_state import poll_state
from ledger.models import State, utcnow
from ledger.publish import Lane, publish_and_record
from providers.base import RecordingRef
from tests.e2e.stack import STACK_MARKS
from tests.fixtures.callrec import REPO, settings_from
from tests.scale.cluster import BEATS, CAPTURE_WORKERS, Cluster
from workers.celery_config import capture_queue_of, make_celery

pytestmark = [pytest.mark.e2e, *STACK_MARKS["postgres-rabbitmq-s3"], pytest.mark.timeout(300)]


def _random_size() -> int:
    return random.randint(4_000, 24_000)


SWEPT = 20


def test_two_sweepers_publishing_the_same_stale_rows_capture_each_once(cluster: Cluster) -> None:
    """Rows whose message looks lost (published long ago, still waiting) are what every sweeper
    publishes (``rows_to_publish``, unit-tested in tests/ledger); two sweepers that read them at
    the same moment both publish them. The test publishes each row twice to the real broker, as
    those two would, while the two beats' sweepers may publish them too: one capture per row."""
    recs = [cluster.emulator.add_recording(size=_random_size()) for _ in range(SWEPT)]
    settings = settings_from(cluster.env)
    refs = [RecordingRef(rec.id) for rec in recs]
    ids = accept_refs(cluster.sessions, "telnyx", "default", refs, source="webhook").new_ids
    stale = timedelta(seconds=settings.stuck_after_seconds + 5)
    mark_enqueued(cluster.sessions, ids, at=utcnow() - stale)  # the relays leave them alone
    received_before = cluster.tasks_received(CAPTURE_WORKERS, "callrec.capture")
    celery = make_celery(settings)
    try:

        def send(row_id: int, countdown: float | None, lane: Lane) -> None:
            queue = capture_queue_of(settings, lane)
            celery.send_task("callrec.capture", args=[row_id], countdown=countdown, queue=queue)

        for _sweeper in range(2):  # what each of two sweepers that read the rows together does
            assert publish_and_record(send, cluster.sessions, ids) == ids
    finally:
        celery.close()

    rows = cluster.wait_all_final([rec.id for rec in recs], timeout=60)
    cluster.tally(recs).assert_clean()
    assert {row.state for row in rows} == {State.STORED}
    stored_events = cluster.events_per_row(ids, State.STORED)
    assert sorted(stored_events.values()) == [1] * SWEPT
    # Each row's second message reached a worker and found nothing to claim.
    received = cluster.tasks_received(CAPTURE_WORKERS, "callrec.capture") - received_before
    assert received >= 2 * SWEPT, received
    print(f"\ntwo sweepers: {SWEPT} rows, {received} capture messages, {SWEPT} captures")


BACKFILL = 40
BACKFILL_COMMAND = [sys.executable, "-m", "callrec_cli", "backfill", "--provider", "telnyx"]
SLOW_AUDIO_SECONDS = 0.25


def _backfill(cluster: Cluster, since: datetime, until: datetime) -> None:
    done = subprocess.run(
        [*BACKFILL_COMMAND, "--since", since.isoformat(), "--until", until.isoformat()],
        env={**os.environ, **cluster.env, "PYTHONPATH": str(REPO)},
        cwd=cluster.processes["worker-1"].log_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"{BACKFILL} new (published for capture)" in done.stdout, done.stdout


def test_a_backfill_never_delays_a_fresh_webhook_capture(cluster: Cluster) -> None:
    emulator = cluster.emulator
    old = datetime.now(UTC) - timedelta(days=3)  # beyond the polls' lookback: only the backfill
    backlog = [
        emulator.add_recording(size=_random_size(), started_at=old + timedelta(seconds=n))
        for n in range(BACKFILL)
    ]
    # Every audio download of the next BACKFILL + 1 is slow (the fresh one's too).
    emulator.inject("audio", "slow", times=BACKFILL + 1, seconds=SLOW_AUDIO_SECONDS)
    _backfill(cluster, old - timedelta(minutes=1), old + timedelta(minutes=5))

    fresh = emulator.add_recording(size=_random_size())
    body = cluster.signer.recording_saved_body(fresh)
    assert cluster.post(0, body, cluster.signer.headers(body)).status_code == 200
    keys = [rec.id for rec in backlog]
    (fresh_row,) = cluster.wait_all_final([fresh.id], timeout=60)
    still_waiting = sum(1 for row in cluster.rows(keys) if row.state != State.STORED)

    rows = cluster.wait_all_final(keys, timeout=120)
    emulator.clear_faults()  # any slow download left unconsumed must not reach the next test
    result = cluster.tally([*backlog, fresh])
    print(f"\nbackfill tally: {result.line()}")
    result.assert_clean()
    assert fresh_row.state == State.STORED and fresh_row.source == "webhook"
    assert {row.source for row in rows} == {"backfill"}
    # The fresh recording overtook the backfill queued before it: stored before most of it.
    assert fresh_row.stored_at is not None
    stored_after_fresh = sum(
        1 for row in rows if row.stored_at and row.stored_at > fresh_row.stored_at
    )
    assert stored_after_fresh >= BACKFILL // 2, (stored_after_fresh, still_waiting)
    # Backfill captures ran only on the backfill worker, the fresh one on a capture worker.
    backfill_ids = {row.id for row in rows}
    assert backfill_ids == set(cluster.stored_by("worker-backfill"))
    assert any(fresh_row.id in cluster.stored_by(name) for name in CAPTURE_WORKERS)
    first = min(row.stored_at for row in rows if row.stored_at)
    last = max(row.stored_at for row in rows if row.stored_at)
    print(
        f"backfill: {BACKFILL} slow recordings drained in {(last - first).total_seconds():.1f}s; "
        f"fresh webhook stored {(fresh_row.stored_at - first).total_seconds():.1f}s after the "
        f"first backfill capture, with {still_waiting} backfill rows still waiting and "
        f"{stored_after_fresh} stored after it"
    )


ONCE, TWICE, POLL_ONLY = 160, 30, 20


def test_two_webs_three_workers_two_beats_two_relays_store_each_recording_once(
    cluster: Cluster,
) -> None:
    began, listed = time.monotonic(), utcnow()
    emulator = cluster.emulator
    once = [emulator.add_recording(size=_random_size()) for _ in range(ONCE)]
    twice = [emulator.add_recording(size=_random_size()) for _ in range(TWICE)]
    poll_only = [emulator.add_recording(size=_random_size()) for _ in range(POLL_ONLY)]
    everything = once + twice + poll_only
    # Race the reconciliation poll: send the webhooks as soon as a poll of them starts.
    cluster.wait_poll_started(after=listed)
    statuses, pairs = cluster.announce_all(once, twice)
    sent_in = time.monotonic() - began
    assert statuses == [200] * (ONCE + 2 * TWICE)
    # The same delivery to both web processes at once: one accepts it, the other sees it.
    assert all(sorted(pair) == ["accepted", "duplicate"] for pair in pairs), pairs

    rows = cluster.wait_all_final([rec.id for rec in everything], timeout=150)
    elapsed = time.monotonic() - began
    result = cluster.tally(everything)
    print(f"\nscale-out tally: {result.line()}")
    result.assert_clean()
    assert result.stored == len(everything)

    # One successful attempt per recording, in the ledger's own history.
    ids = [row.id for row in rows]
    stored_events = cluster.events_per_row(ids, State.STORED)
    assert set(stored_events.values()) == {1} and len(stored_events) == len(ids)
    claims = cluster.events_per_row(ids, State.FETCHING)
    sources = {row.recording_key: row.source for row in rows}
    assert all(sources[rec.id] == "poll" for rec in poll_only)  # the poll raced and found them
    poll_won = sum(1 for rec in once + twice if sources[rec.id] == "poll")

    # The work was spread over the three capture workers; each row stored by exactly one.
    mine = set(ids)
    stored_by = {
        name: [i for i in cluster.stored_by(name) if i in mine] for name in CAPTURE_WORKERS
    }
    all_stored = [row_id for got in stored_by.values() for row_id in got]
    assert sorted(all_stored) == sorted(ids)
    assert all(len(got) >= len(ids) // 20 for got in stored_by.values()), stored_by

    # Two relays (and the sweepers) published some rows twice; the claim absorbed the copies.
    received = cluster.tasks_received(CAPTURE_WORKERS, "callrec.capture")
    assert received >= len(ids)
    # Two beats: both ticked, both sent sweeps; the ledger let one poll per interval through.
    ticks = {name: cluster.beat_sent(name, "schedule-polls") for name in BEATS}
    sweeps = {name: cluster.beat_sent(name, "sweep") for name in BEATS}
    assert all(count >= 2 for count in ticks.values()), ticks
    assert all(count >= 2 for count in sweeps.values()), sweeps
    beating = time.monotonic() - cluster.beats_started
    polls = cluster.tasks_received(["worker-poll"], "callrec.poll")
    interval = 10 - 1  # CALLREC_POLL_INTERVAL_SECONDS less half a tick (reconcile.schedule_polls)
    assert 1 <= polls <= beating // interval + 1, (polls, beating)
    state = poll_state(cluster.sessions, "telnyx", "default")
    assert state is not None and state.last_success_at is not None
    print(
        f"scale-out: {len(ids)} recordings, {ONCE + 2 * TWICE} webhooks sent in {sent_in:.1f}s, "
        f"all stored after {elapsed:.1f}s; "
        f"claims {sum(claims.values())}, capture messages {received} "
        f"({received - len(ids)} absorbed by the claim); poll won {poll_won} webhook races; "
        f"stored per worker {[len(got) for got in stored_by.values()]}; "
        f"beat ticks {ticks} -> {polls} polls in {beating:.0f}s; sweeps {sweeps}"
    )
