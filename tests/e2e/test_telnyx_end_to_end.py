"""One Telnyx recording from signed webhook to storage, for real, on every supported stack:

* embedded: SQLite ledger, SQLite (kombu SQLAlchemy) broker, local disk;
* PostgreSQL ledger + Redis broker + S3 (moto server);
* PostgreSQL ledger + RabbitMQ broker + S3 (moto server).

Each stack runs a real Celery worker process; nothing is patched. The provider faults here
(duplicates, expired URL, 429, truncated body, 5xx, gone) are the spine's checks on every
stack; the fault suite (``tests/faults/``) takes each further, on one stack, to its row's pass
criterion.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, audio_key, stack_of_kind
from tests.faults.provider_stack import api_gets
from tests.fixtures.callrec import settings_from

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STACKS = ["embedded", "postgres-redis-s3", "postgres-rabbitmq-s3"]


@pytest.fixture(scope="module", params=STACKS, ids=STACKS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from stack_of_kind(request, tmp_path_factory)


@pytest.fixture(autouse=True)
def _clean_faults(stack: Stack) -> Iterator[None]:
    stack.emulator.clear_faults()
    yield
    stack.emulator.clear_faults()


def test_webhook_ends_as_audio_and_metadata_record(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=300_000, channels="dual", duration_millis=42_000)
    stack.announce(rec)
    row = stack.wait_final(rec.id)
    key = audio_key(rec)
    assert row.state == "stored", row.last_error
    assert (row.storage_key, row.size_bytes) == (key, 300_000)
    assert row.sha256 == rec.audio("mp3").sha256() == stack.stored_bytes_sha256(key)
    record = stack.metadata(key)
    assert record["provider"] == "telnyx" and record["account"] == "default"
    assert record["recording_id"] == rec.id and record["call_id"] == rec.call_session_id
    assert (record["format"], record["content_type"]) == ("mp3", "audio/mpeg")
    assert (record["size_bytes"], record["sha256"]) == (300_000, row.sha256)
    assert (record["duration_seconds"], record["channels"]) == (42.0, 2)
    assert record["source_host"] == "127.0.0.1"
    assert record["started_at"] and record["ended_at"] and record["captured_at"]
    assert "X-Amz" not in str(record) and "download_urls" not in str(record)


def test_duplicates_sequential_concurrent_and_redelivered_store_once(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=200_000)
    body = stack.signer.recording_saved_body(rec, event_id=str(uuid.uuid4()))
    statuses = stack.send_concurrently(body, 12)
    statuses += [stack.send(body).status_code for _ in range(3)]
    redelivery = stack.signer.recording_saved_body(rec, attempt=2)  # new event id, same recording
    statuses.append(stack.send(redelivery).status_code)
    assert statuses == [200] * 16
    row = stack.wait_final(rec.id)
    assert row.state == "stored"
    assert [r.recording_key for r in stack.rows()].count(rec.id) == 1
    assert row.sha256 == stack.stored_bytes_sha256(audio_key(rec))


def test_expired_url_is_refreshed(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=100_000)
    stack.emulator.inject("audio", "expired")
    stack.announce(rec)
    row = stack.wait_final(rec.id)
    assert row.state == "stored" and row.attempts == 1
    assert len(api_gets(stack, rec)) == 2  # a fresh URL after the 403
    assert row.sha256 == rec.audio("mp3").sha256()


def test_rate_limit_is_waited_out(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=50_000)
    stack.emulator.inject("api", "429", retry_after=2)
    stack.announce(rec)
    row = stack.wait_final(rec.id)
    assert row.state == "stored"
    limited, retried = api_gets(stack, rec)[:2]
    assert retried - limited >= 2.0  # not one request before Retry-After elapsed
    assert row.attempts == 2


def test_truncated_download_is_retried_and_exact(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=2_000_000)
    stack.emulator.inject("audio", "truncate", after_bytes=700_000)
    stack.announce(rec)
    row = stack.wait_final(rec.id)
    assert row.state == "stored" and row.size_bytes == 2_000_000
    assert stack.stored_bytes_sha256(audio_key(rec)) == rec.audio("mp3").sha256()


def test_webhook_without_recording_id_is_resolved_by_call_session(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=64_000)
    stack.announce(rec, include_recording_id=False)
    row = stack.wait_final(rec.id, timeout=60)
    assert row.state == "stored" and row.parent_id is not None
    lookup = stack.row(f"lookup:call_session_id={rec.call_session_id}")
    assert lookup is not None and lookup.state == "resolved"


def test_recording_gone_at_the_provider_fails_with_a_reason(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=10_000)
    stack.emulator.remove_recording(rec.id)
    stack.announce(rec)
    row = stack.wait_final(rec.id)
    assert row.state == "failed"
    assert row.last_error is not None and "not found" in row.last_error


def test_server_errors_are_retried_then_stored(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=10_000)
    stack.emulator.inject("api", "503", times=2)
    stack.announce(rec)
    row = stack.wait_final(rec.id)
    assert row.state == "stored" and row.attempts == 3


def test_storage_holds_nothing_partial(stack: Stack, tmp_path: Path) -> None:
    """After the scenarios above: every object has its metadata record, and no temp is left."""
    keys = [row.storage_key for row in stack.rows() if row.state == "stored"]
    assert keys
    for key in keys:
        assert stack.storage.stat(key) is not None
        assert stack.metadata(key)["storage_key"] == key


def test_control_broadcasts_stay_within_the_deployment(stack: Stack) -> None:
    """The worker answers a ping on its own deployment's control exchange and not on another
    prefix's, so two deployments sharing a broker never act on each other's ``celery
    control`` commands or Flower's inspections (workers/celery_config.py)."""
    from bench.common import drop_broker_state
    from workers.celery_config import make_celery

    settings = settings_from(stack.env)
    other_prefix = f"o{uuid.uuid4().hex[:10]}"
    own = make_celery(settings)
    other = make_celery(replace(settings, queue_prefix=other_prefix))
    try:
        if settings.broker_url.startswith("sqla+"):
            # kombu's SQLAlchemy transport has no fanout: no broadcast reaches any worker (so
            # no Flower either: README), and none can reach another deployment's.
            assert own.control.ping(timeout=1) == other.control.ping(timeout=1) == []
            return
        replies = own.control.ping(timeout=3)
        assert len(replies) == 1, replies  # this stack's worker, only
        assert other.control.ping(timeout=1) == []
    finally:
        own.close()
        other.close()
        drop_broker_state(settings.broker_url, other_prefix)  # its ping's reply exchange
