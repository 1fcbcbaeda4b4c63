"""The embedded broker's batched publishing (workers/sqla_broker.py): the rows are kombu's own,
consumers read them unchanged and in order, and a batch that cannot be stored stores nothing
and leaves its ledger rows unpublished."""

from __future__ import annotations

import functools
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError

from config.settings import Settings
from ledger import Recording, accept_refs, migrate
from providers.base import RecordingRef
from tests.fixtures.callrec import base_env, settings_from
from tests.workers.celery_helpers import send_capture, take_messages
from workers.celery_config import capture_queue, make_celery
from workers.relay import relay
from workers.runtime import build_runtime
from workers.sqla_broker import (
    _PREPARED,
    SATURATED_WAIT_SECONDS,
    Channel,
    Transport,
    batch_sender,
)

COLUMNS = "visible, timestamp, version, queue_id"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_from(base_env(tmp_path))


def broker_rows(settings: Settings) -> list[tuple[Any, ...]]:
    engine = create_engine(settings.broker_url.removeprefix("sqla+"))
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(text(f"SELECT {COLUMNS} FROM kombu_message ORDER BY id"))  # noqa: S608
            )
    finally:
        engine.dispose()


def test_a_batch_stores_kombus_rows_and_consumers_read_them_in_order(
    app: Celery, settings: Settings
) -> None:
    send = send_capture(app, settings)
    with app.producer_or_acquire() as producer:
        assert isinstance(producer.channel, Channel)
        send(1, None, "fresh", producer=producer)  # outside a batch: kombu's own _put
    with batch_sender(app, send) as send_one:
        send_one(2, None, "fresh")
        send_one(3, 5.0, "fresh")
        assert len(broker_rows(settings)) == 1  # nothing stored before the block ends
    first, *batched = broker_rows(settings)
    assert batched == [first, first]  # the same columns as kombu writes (payload aside)
    messages = take_messages(app, capture_queue(settings), 3)
    assert [m.payload[0] for m in messages] == [[1], [2], [3]]
    assert all(m.headers["task"] == "callrec.capture" for m in messages)
    assert len({m.headers["id"] for m in messages}) == 3
    assert messages[2].headers["eta"] is not None  # the countdown went into the message


def kombu_engine(app: Celery) -> Engine:
    with app.producer_or_acquire() as producer:
        bind = producer.channel.session.get_bind()
        assert isinstance(bind, Engine)
        return bind


def test_a_batch_that_cannot_be_stored_stores_nothing_and_leaves_its_rows(
    app: Celery, settings: Settings
) -> None:
    migrate(settings.database_url)
    send = send_capture(app, settings)
    runtime = build_runtime(settings, send, functools.partial(batch_sender, app, send))
    engine = kombu_engine(app)

    def fail(_connection: Any) -> None:  # as a full disk or a lock timeout would
        raise OperationalError("COMMIT", {}, sqlite3.OperationalError("disk I/O error"))

    try:
        accept_refs(runtime.sessions, "telnyx", "default", [RecordingRef("r")], source="t")
        assert relay(runtime, threading.Event(), max_rounds=1) == 1  # the queue exists now
        refs = [RecordingRef(f"r{i}") for i in range(3)]
        ids = accept_refs(runtime.sessions, "telnyx", "default", refs, source="t").new_ids
        event.listen(engine, "commit", fail)
        try:
            assert relay(runtime, threading.Event(), max_rounds=1) == 0
        finally:
            event.remove(engine, "commit", fail)
        assert len(broker_rows(settings)) == 1
        with runtime.sessions() as session:
            assert all(session.get(Recording, i).enqueued_at is None for i in ids)
        assert relay(runtime, threading.Event(), max_rounds=1) == 3  # the next round sends them
        assert len(broker_rows(settings)) == 4
    finally:
        runtime.close()


def test_a_consumer_at_its_prefetch_waits_briefly_and_an_idle_one_its_polling_interval(
    app: Celery, settings: Settings
) -> None:
    """kombu sleeps its polling interval (1 s) whenever a round delivers nothing, also when it
    may take nothing because every prefetched message is still being worked on: the pool then
    idled most of each second. Only an empty queue waits the interval now."""
    send = send_capture(app, settings)
    with batch_sender(app, send) as send_one:
        send_one(1, None, "fresh")
        send_one(2, None, "fresh")
    received: list[Any] = []
    with app.connection_for_read() as connection:
        transport = connection.transport
        assert isinstance(transport, Transport)
        queue = app.amqp.queues[capture_queue(settings)]
        with connection.Consumer(
            [queue], callbacks=[lambda _body, message: received.append(message)], prefetch_count=1
        ):
            connection.drain_events(timeout=5)
            assert len(received) == 1  # one held, unacked: the prefetch is full
            with pytest.raises(TimeoutError):
                connection.drain_events(timeout=0.1)  # message 2 waits: it may not be taken
            assert transport.idle_wait() == SATURATED_WAIT_SECONDS
            received[0].ack()
            connection.drain_events(timeout=5)
            assert [m.payload[0] for m in received] == [[1], [2]]
            received[1].ack()
            with pytest.raises(TimeoutError):
                connection.drain_events(timeout=0.1)  # nothing left
            assert transport.idle_wait() == transport.polling_interval == 1.0


def test_a_taken_message_leaves_no_row_and_one_put_back_comes_again(
    app: Celery, settings: Settings
) -> None:
    """kombu kept every delivered message as an invisible row (the broker file grew with every
    message ever sent, and finding the next one walked past all of them)."""
    send = send_capture(app, settings)
    with batch_sender(app, send) as send_one:
        for recording_id in (1, 2, 3):
            send_one(recording_id, None, "fresh")
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(capture_queue(settings))
        try:
            first = queue.get(timeout=5)
            assert len(broker_rows(settings)) == 2  # taken: gone from the table
            first.requeue()  # a lost worker's message goes back (kombu stores it anew)
            taken = [queue.get(timeout=5) for _ in range(3)]
            for message in taken:
                message.ack()
        finally:
            queue.close()
    assert sorted(m.payload[0] for m in taken) == [[1], [2], [3]]
    assert broker_rows(settings) == []


def test_rows_kombu_left_delivered_are_removed_when_the_broker_is_opened(
    settings: Settings,
) -> None:
    first = make_celery(settings)
    try:
        send = send_capture(first, settings)
        with batch_sender(first, send) as send_one:
            send_one(1, None, "fresh")
            send_one(2, None, "fresh")
    finally:
        first.close()
    engine = create_engine(settings.broker_url.removeprefix("sqla+"))
    try:
        with engine.begin() as connection:  # as kombu's own _get left a delivered message
            connection.execute(text("UPDATE kombu_message SET visible = 0 WHERE id = 1"))
    finally:
        engine.dispose()
    _PREPARED.clear()  # a new process
    second = make_celery(settings)
    try:
        with second.connection_for_read() as connection:
            queue = connection.SimpleQueue(capture_queue(settings))
            try:
                message = queue.get(timeout=5)
                message.ack()
            finally:
                queue.close()
    finally:
        second.close()
    assert message.payload[0] == [2]
    assert broker_rows(settings) == []
