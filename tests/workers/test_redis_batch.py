"""The relay's batches on Redis (workers/sqla_broker.py ``batch_sender``): kombu's
``Producer.batch()`` sends a batch's messages as one pipeline when the block ends, the
messages are Celery's own, and a batch Redis never took leaves its ledger rows unpublished."""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from bench.common import drop_redis_keys
from config.settings import Settings
from ledger import Recording, accept_refs, migrate
from providers.base import RecordingRef
from tests.fixtures.callrec import RecordedWaits, base_env, free_port, settings_from
from tests.workers.celery_helpers import send_capture, take_messages
from workers.celery_config import capture_queue, make_celery
from workers.relay import BROKER_ERROR_PAUSE_SECONDS, relay
from workers.runtime import build_runtime
from workers.sqla_broker import batch_sender

pytestmark = pytest.mark.redis


def redis_settings(tmp_path: Path, broker_url: str) -> Settings:
    return settings_from(
        base_env(
            tmp_path,
            CALLREC_BROKER_URL=broker_url,
            CALLREC_QUEUE_PREFIX=f"t{uuid.uuid4().hex[:10]}",
        )
    )


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Iterator[Settings]:
    settings = redis_settings(tmp_path, redis_url)
    yield settings
    drop_redis_keys(redis_url, settings.queue_prefix)


def queue_length(settings: Settings, redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(capture_queue(settings)))
    finally:
        client.close()


def test_a_batch_is_sent_when_its_block_ends_as_celerys_messages(
    app: Celery, settings: Settings, redis_url: str
) -> None:
    with batch_sender(app, send_capture(app, settings)) as send_one:
        for recording_id in (1, 2, 3):
            send_one(recording_id, None, "fresh")
        assert queue_length(settings, redis_url) == 0  # buffered in the pipeline
    assert queue_length(settings, redis_url) == 3
    messages = take_messages(app, capture_queue(settings), 3)
    assert sorted(m.payload[0] for m in messages) == [[1], [2], [3]]
    assert all(m.headers["task"] == "callrec.capture" for m in messages)
    assert len({m.headers["id"] for m in messages}) == 3


def test_the_relay_publishes_on_redis_and_records_it(
    app: Celery, settings: Settings, redis_url: str
) -> None:
    migrate(settings.database_url)
    send = send_capture(app, settings)
    runtime = build_runtime(settings, send, functools.partial(batch_sender, app, send))
    try:
        refs = [RecordingRef(f"r{i}") for i in range(20)]
        ids = accept_refs(runtime.sessions, "telnyx", "default", refs, source="t").new_ids
        assert relay(runtime, threading.Event(), max_rounds=1) == 20
        assert queue_length(settings, redis_url) == 20
        with runtime.sessions() as session:
            assert all(session.get(Recording, i).enqueued_at is not None for i in ids)
    finally:
        runtime.close()


def test_a_batch_redis_never_took_leaves_its_rows_unpublished(tmp_path: Path) -> None:
    settings = redis_settings(tmp_path, f"redis://127.0.0.1:{free_port()}/0")  # nothing listens
    migrate(settings.database_url)
    app = make_celery(settings)
    app.conf.task_publish_retry_policy = {"max_retries": 0}
    send = send_capture(app, settings)
    runtime = build_runtime(settings, send, functools.partial(batch_sender, app, send))
    try:
        refs = [RecordingRef(f"r{i}") for i in range(3)]
        ids = accept_refs(runtime.sessions, "telnyx", "default", refs, source="t").new_ids
        stop = RecordedWaits()  # the back-off after the refusal returns at once
        assert relay(runtime, stop, max_rounds=1) == 0
        assert stop.waits == [BROKER_ERROR_PAUSE_SECONDS]
        with runtime.sessions() as session:
            assert all(session.get(Recording, i).enqueued_at is None for i in ids)
    finally:
        runtime.close()
        app.close()
