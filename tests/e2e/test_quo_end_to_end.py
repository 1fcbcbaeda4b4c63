"""Quo calls from signed webhook (or from a poll of its calls) to S3, for real: PostgreSQL ledger,
Redis broker, moto-server S3, a real Celery worker process and relay, the Quo emulator over HTTP.
Nothing is patched."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ledger import accept_refs
from providers.registry import Accounts
from tests.e2e.quo_stack import QuoStack, audio_key, lookup_key, start_quo_stack
from tests.e2e.stack import server_env
from tests.fixtures.callrec import settings_from
from tests.fixtures.servers import fresh_postgres_database

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.s3,
    pytest.mark.timeout(300),
]

# Quick retries so "not ready yet" rows come back within the test's patience.
FAST_RETRIES = {"CALLREC_RETRY_BASE_SECONDS": "0.5", "CALLREC_RETRY_MAX_SECONDS": "2"}


@pytest.fixture(scope="module")
def quo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[QuoStack]:
    tmp = tmp_path_factory.mktemp("quo-postgres-redis-s3")
    for database in fresh_postgres_database():
        env = server_env("postgres-redis-s3", request, database)
        running = start_quo_stack(tmp, **env, **FAST_RETRIES)
        yield running
        running.close()


@pytest.fixture(autouse=True)
def _clean_faults(quo: QuoStack) -> Iterator[None]:
    quo.emulator.clear_faults()
    yield
    quo.emulator.clear_faults()


def test_multi_segment_call_stores_one_object_and_record_per_segment(quo: QuoStack) -> None:
    call = quo.emulator.add_call(segments=3, size=150_000, duration=20)
    lookup = quo.base.wait_final(quo.announce(call), states=("resolved",))
    assert "resolved into 3 recording(s)" in str(quo.detail(lookup))
    for segment, rec in enumerate(call.recordings, start=1):
        row = quo.wait_state(rec.id)
        key = audio_key(rec.id)
        assert row.state == "stored", row.last_error
        assert (row.storage_key, row.size_bytes, row.parent_id) == (key, 150_000, lookup.id)
        assert row.sha256 == rec.audio().sha256() == quo.base.stored_bytes_sha256(key)
        record = quo.base.metadata(key)
        assert (record["provider"], record["recording_id"]) == ("quo", rec.id)
        assert (record["call_id"], record["segment"]) == (call.id, segment)
        assert (record["format"], record["content_type"]) == ("mp3", "audio/mpeg")
        assert record["duration_seconds"] == 20 and record["started_at"] and record["ended_at"]
        assert "X-Amz" not in str(record)


def test_processing_recording_is_captured_once_it_completes(quo: QuoStack) -> None:
    call = quo.emulator.add_call(segments=1, status="processing", size=40_000)
    rec = call.recordings[0]
    quo.announce(call, "call.completed", shape="resource", scheme="standard")
    row = quo.wait_state(rec.id, states=("retrying",))
    assert row.last_error is not None and "processing" in row.last_error
    quo.emulator.set_status(rec.id, "completed")
    row = quo.wait_state(rec.id)
    assert row.state == "stored" and row.attempts >= 2
    assert row.sha256 == rec.audio().sha256()


def test_deleted_recording_ends_failed_with_the_reason(quo: QuoStack) -> None:
    call = quo.emulator.add_call(segments=2, size=10_000)
    kept, gone = call.recordings
    quo.emulator.set_status(gone.id, "deleted")
    quo.announce(call, shape="resource")
    assert quo.wait_state(kept.id).state == "stored"
    row = quo.wait_state(gone.id)
    assert row.state == "failed" and row.attempts == 1
    assert row.last_error is not None and "'deleted'" in row.last_error


def test_call_without_recordings_ends_resolved_at_once(quo: QuoStack) -> None:
    call = quo.emulator.add_call(segments=0)
    row = quo.wait_state(quo.announce(call, "call.completed", scheme="standard"))
    assert row.state == "resolved" and row.attempts == 1
    assert quo.detail(row) == "resolved into 0 recordings: the call ended without recordings"


def test_duplicate_deliveries_under_both_schemes_store_once(quo: QuoStack) -> None:
    call = quo.emulator.add_call(segments=2, size=60_000)
    body = quo.sender.call_event_body(call)
    headers = quo.sender.legacy_headers(body)
    statuses: list[int] = []
    lock = threading.Lock()

    def deliver() -> None:
        status = quo.send(body, headers=headers).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    standard = quo.sender.standard_headers(body, msg_id="msg_dup")
    statuses += [quo.send(body, headers=standard).status_code for _ in range(3)]
    assert statuses == [200] * 11
    for rec in call.recordings:
        assert quo.wait_state(rec.id).state == "stored"
        assert [r.recording_key for r in quo.base.rows()].count(rec.id) == 1
        media_gets = [r for r in quo.emulator.requests if r.path == f"/media/{rec.id}.mp3"]
        assert len(media_gets) == 1  # downloaded once


def test_rate_limited_api_is_waited_out(quo: QuoStack) -> None:
    call = quo.emulator.add_call(segments=1, size=5_000)
    quo.emulator.inject("api", "429", times=2, retry_after=1)
    quo.announce(call)
    row = quo.wait_state(call.recordings[0].id)
    assert row.state == "stored"
    assert [r.status for r in quo.emulator.requests if r.status == 429][:2] == [429, 429]


def test_polled_call_is_stored_once_per_segment_and_its_webhooks_add_nothing(
    quo: QuoStack,
) -> None:
    """What the reconciler does (list the last hour, accept as poll rows), then the webhooks."""
    recorded = quo.emulator.add_call(segments=2, size=70_000, participant="+18005550177")
    silent = quo.emulator.add_call(segments=0, participant="+18005550188")
    now = datetime.now(UTC)
    with httpx.Client(timeout=10, trust_env=False) as http:
        provider = Accounts(settings_from(quo.base.env), http).provider("quo")
        listed = list(provider.list_recordings(now - timedelta(hours=1), now))
    ours = [ref for ref in listed if ref.call_id in (recorded.id, silent.id)]
    result = accept_refs(quo.base.sessions, "quo", "default", ours, source="poll")
    assert len(result.new_ids) == 2  # one lookup per call
    lookup = quo.wait_state(lookup_key(recorded.id, "call.completed"), states=("resolved",))
    assert lookup.source == "poll"
    assert "resolved into 2 recording(s)" in str(quo.detail(lookup))
    empty = quo.wait_state(lookup_key(silent.id, "call.completed"), states=("resolved",))
    assert empty.attempts == 1  # final at once, not retried
    assert quo.detail(empty) == "resolved into 0 recordings: the call ended without recordings"
    for rec in recorded.recordings:
        row = quo.wait_state(rec.id)
        assert row.state == "stored" and row.parent_id == lookup.id
        assert row.sha256 == rec.audio().sha256() == quo.base.stored_bytes_sha256(audio_key(rec.id))
    # The webhooks arrive late: call.completed names the poll's lookup row (nothing new);
    # call.recording.completed makes its own lookup, resolved into the rows already stored.
    assert quo.announce(recorded, "call.completed") == lookup_key(recorded.id, "call.completed")
    late = quo.wait_state(quo.announce(recorded), states=("resolved",))
    assert "resolved into 2 recording(s)" in str(quo.detail(late))
    keys = [row.recording_key for row in quo.base.rows()]
    assert keys.count(lookup_key(recorded.id, "call.completed")) == 1
    for rec in recorded.recordings:
        assert keys.count(rec.id) == 1
        assert quo.wait_state(rec.id).state == "stored"
        gets = [r for r in quo.emulator.requests if r.path == f"/media/{rec.id}.mp3"]
        assert len(gets) == 1  # downloaded once
