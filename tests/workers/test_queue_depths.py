"""The sweeper reads each capture lane's queue before it calls a stale row's message lost
(workers/queue_depths.py, ledger/sweeper.py), on every broker callrec runs on: behind a
backlog the stale rows' messages are still queued and nothing is republished; messages that
really are gone (purged here, as a broker that dropped them) are republished."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import update

from bench.common import drop_broker_state
from config.settings import Settings
from ledger import Recording, accept_refs, make_engine, make_session_factory, migrate
from ledger.models import utcnow
from providers.base import RecordingRef
from tests.fixtures.callrec import base_env, free_port, settings_from
from tests.workers.celery_helpers import capture_queues, send_capture
from workers.celery_config import capture_queue_of, make_celery
from workers.queue_depths import capture_queue_depths
from workers.runtime import Runtime, build_runtime
from workers.sqla_broker import batch_sender
from workers.sweep import sweep

BROKERS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", id="rabbitmq", marks=pytest.mark.rabbitmq),
]


@pytest.fixture(params=BROKERS)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    kind = request.param
    overrides = {}
    if kind != "embedded":
        overrides["CALLREC_BROKER_URL"] = request.getfixturevalue(f"{kind}_url")
    settings = settings_from(base_env(tmp_path, **overrides))
    migrate(settings.database_url)
    yield settings
    drop_broker_state(settings.broker_url, settings.queue_prefix)


@pytest.fixture
def runtime(app: Celery, settings: Settings) -> Iterator[Runtime]:
    send = send_capture(app, settings)
    runtime = build_runtime(
        settings,
        send,
        functools.partial(batch_sender, app, send, capture_queues(settings)),
        functools.partial(capture_queue_depths, app, settings),
    )
    yield runtime
    runtime.close()


def _purge(app: Celery, settings: Settings) -> None:
    with app.connection_for_write() as connection:
        for lane in ("fresh", "backfill"):
            queue = connection.SimpleQueue(capture_queue_of(settings, lane))
            try:
                queue.clear()
            finally:
                queue.close()


def test_depths_count_each_lanes_waiting_messages(app: Celery, settings: Settings) -> None:
    assert capture_queue_depths(app, settings) == {"fresh": 0, "backfill": 0}
    send = send_capture(app, settings)
    for recording_id in (1, 2, 3):
        send(recording_id, None, "fresh")
    send(4, None, "backfill")
    assert capture_queue_depths(app, settings) == {"fresh": 3, "backfill": 1}


def test_a_batch_declares_its_queues_once_before_any_worker_did(
    app: Celery, settings: Settings
) -> None:
    """The relay's messages skip Celery's per-message declare; the batch declared both queues,
    so on RabbitMQ they are not dropped for want of a queue when no worker declared it yet."""
    send = send_capture(app, settings)
    with batch_sender(app, send, capture_queues(settings)) as send_one:
        send_one(1, None, "fresh")
        send_one(2, None, "fresh")
        send_one(3, None, "backfill")
    assert capture_queue_depths(app, settings) == {"fresh": 2, "backfill": 1}


def test_a_broker_that_cannot_answer_gives_no_depths(tmp_path: Path) -> None:
    down = settings_from(
        base_env(tmp_path, CALLREC_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    )
    app = make_celery(down)
    try:
        assert capture_queue_depths(app, down) is None
    finally:
        app.close()


def test_stale_rows_still_queued_are_not_republished_and_lost_ones_are(
    app: Celery, settings: Settings, runtime: Runtime
) -> None:
    refs = [RecordingRef(f"r{i}") for i in range(3)]
    ids = accept_refs(runtime.sessions, "telnyx", "default", refs, source="webhook").new_ids
    assert runtime.publish(ids) == ids
    long_ago = utcnow() - timedelta(seconds=settings.stuck_after_seconds + 60)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine).begin() as session:
            session.execute(
                update(Recording)
                .where(Recording.id.in_(ids))
                .values(enqueued_at=long_ago, updated_at=long_ago)
            )
    finally:
        engine.dispose()
    assert sweep(runtime) == 0  # a backlog nobody consumed yet: their messages are queued
    assert capture_queue_depths(app, settings) == {"fresh": 3, "backfill": 0}
    _purge(app, settings)  # the broker lost them
    assert sweep(runtime) == 3
    assert capture_queue_depths(app, settings) == {"fresh": 3, "backfill": 0}
    assert sweep(runtime) == 0  # republished just now: not stale


def test_a_stacks_broker_state_is_dropped(app: Celery, settings: Settings) -> None:
    """What tests and benchmarks call when a stack stops (bench.common.drop_broker_state):
    afterwards the shared broker holds none of the stack's messages or queues."""
    send_capture(app, settings)(1, None, "fresh")
    assert capture_queue_depths(app, settings) == {"fresh": 1, "backfill": 0}
    drop_broker_state(settings.broker_url, settings.queue_prefix)
    # The embedded broker is a file in the stack's own folder: nothing shared, nothing dropped.
    left = 1 if settings.broker_url.startswith("sqla") else 0
    assert capture_queue_depths(app, settings) == {"fresh": left, "backfill": 0}
