"""The embedded SQLite broker: kombu's SQLAlchemy transport, with batched publishing.

kombu's ``sqla`` channel stores each published message with an ORM query for its queue, an
ORM flush and a COMMIT (an fsync): ~2.3 to 4 ms of CPU per message, more than the whole receiver
budget per webhook (bench/publish.py, docs/PERFORMANCE.md). Inside :meth:`Channel.batch`,
messages are collected instead and stored together at the end: one multi-row INSERT into
kombu's own message table and one COMMIT. Rows are the ones kombu's ``_put`` writes (payload,
queue id, ``visible``, ``version``; the timestamp stays NULL as there), so consumers (kombu's
unchanged ``_get``) see no difference, and Celery's message format is untouched.

A batch is all or nothing: if its COMMIT fails, :meth:`Channel.batch` raises and none of its
messages exist (the relay then leaves every row of it unpublished, to be sent again). Outside a
batch, publishing is kombu's own.

Taking a message differs in two ways from kombu's ``_get``. kombu keeps every delivered message
as a row with ``visible = False`` forever (nothing reads it again: a message put back after a
lost worker is stored anew), so the broker file grew by every message ever sent, and its
query for the next message, which no index fits, walked past all of them: quadratic, ~17 ms
per message after 10,000 (bench/end_to_end.py's no-op worker). Here a taken message is deleted
in the same transaction, and an index on ``(queue_id, visible, timestamp, id)`` finds the next
one of its queue directly, whatever another queue's backlog. Rows left by kombu's way are
deleted when a process first opens the broker.

Consuming is otherwise kombu's own, with one change of pace (:meth:`Transport.drain_events`): when a
worker already holds as many messages as its prefetch allows, kombu's loop finds nothing it may
take and sleeps its whole ``polling_interval`` (1 s), however soon a task ends; with 4 pool
processes and captures of ~40 ms the pool sat idle most of each second (the burst benchmark's
worker log: tasks in clumps one second apart, the machine idle). It now waits
:data:`SATURATED_WAIT_SECONDS` in that case, which reads no database (the prefetch count is in
memory); an empty queue still waits the full interval between polls.

Celery uses this transport through ``broker_transport`` (workers/celery_config.py): kombu
takes an import path only from that explicit setting, never from a URL.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from json import dumps, loads
from queue import Empty
from typing import Any

from celery import Celery
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import delete, insert, select, text, true

__all__ = [
    "BATCH_LIMIT",
    "SATURATED_WAIT_SECONDS",
    "TRANSPORT",
    "Channel",
    "Transport",
    "batch_sender",
]

#: Most broker operations a Redis pipeline buffers before it sends them (kombu's own default).
BATCH_LIMIT = 1000

#: The consumer's wait while every message its prefetch allows is still being worked on.
SATURATED_WAIT_SECONDS = 0.01

#: The index that finds a queue's next message (``Channel._get``); kombu's own cannot.
_NEXT_MESSAGE_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_callrec_{table}_next ON {table}"
    " (queue_id, visible, timestamp, id)"
)
#: Engines whose broker got that index and lost kombu's delivered rows, in this process.
_PREPARED: set[Any] = set()

#: ``broker_transport`` value naming :class:`Transport` (with the ``sqla+`` URL prefix removed).
TRANSPORT = f"{__name__}:Transport"


class Channel(kombu_sqla.Channel):
    """kombu's SQLAlchemy channel; :meth:`batch` stores several publishes in one transaction."""

    _pending: list[tuple[str, str]] | None = None
    #: At its last drain this channel had consumers but could take no message (prefetch full).
    saturated: bool = False

    def drain_events(self, timeout: float | None = None, callback: Any = None) -> Any:
        self.saturated = bool(self._consumers) and not self.qos.can_consume()
        return super().drain_events(timeout=timeout, callback=callback)

    def _open(self) -> Any:
        """kombu's engine and session factory; the first time per engine in a process, the
        index :meth:`_get` relies on, and no rows of messages kombu already delivered."""
        opened = super()._open()
        engine = opened[0]
        if engine not in _PREPARED:
            with engine.begin() as connection:
                connection.execute(text(_NEXT_MESSAGE_INDEX.format(table=self.message_tablename)))
                table = self.message_cls.__table__
                connection.execute(delete(table).where(table.c.visible == False))  # noqa: E712
            _PREPARED.add(engine)
        return opened

    def __init__(self, connection: Any, **kwargs: Any) -> None:
        self._queue_ids: dict[str, int] = {}  # queue name -> its row id in kombu's queue table
        super().__init__(connection, **kwargs)

    def _queue_id(self, queue: str) -> int:
        if queue not in self._queue_ids:
            self._queue_ids[queue] = self._get_or_create(queue).id
        return self._queue_ids[queue]

    def _get(self, queue: str, timeout: Any = None) -> Any:
        """The oldest message of ``queue``, taken and deleted in one write transaction."""
        queue_id = self._queue_id(queue)
        table = self.message_cls.__table__
        session = self.session
        if session.get_bind().dialect.name == "sqlite":
            session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            row = session.execute(
                select(table.c.id, table.c.payload)
                .where(table.c.queue_id == queue_id, table.c.visible == true())
                .order_by(table.c.timestamp, table.c.id)
                .limit(1)
                .with_for_update()
            ).first()
            if row is None:
                raise Empty()
            session.execute(delete(table).where(table.c.id == row.id))
            return loads(row.payload)
        finally:
            session.commit()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Collect the messages published inside the block; store them all when it ends.

        Raises (and stores nothing) if the transaction fails; a nested block joins the outer.
        """
        if self._pending is not None:
            yield
            return
        self._pending = []
        try:
            yield
            pending = self._pending
        finally:
            self._pending = None
        self._store(pending)

    # kombu's two base classes name the second argument differently (message, payload).
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self._pending is None:
            super()._put(queue, payload, **kwargs)
            return
        self._pending.append((queue, dumps(payload)))

    def _store(self, pending: list[tuple[str, str]]) -> None:
        if not pending:
            return
        session = self.session
        try:
            queue_ids = {name: self._get_or_create(name).id for name in {q for q, _ in pending}}
            session.execute(
                insert(self.message_cls.__table__),
                [
                    {"payload": payload, "queue_id": queue_ids[queue], "visible": True,
                     "version": 1}
                    for queue, payload in pending
                ],
            )  # fmt: skip
            session.commit()
        except BaseException:
            session.rollback()
            raise


class Transport(kombu_sqla.Transport):
    Channel = Channel

    def drain_events(self, connection: Any, timeout: Any = None, **_: Any) -> Any:
        """kombu's loop (``virtual.Transport.drain_events``) with :meth:`idle_wait` as its
        sleep after a round that delivered nothing."""
        cycle = self.cycle
        assert cycle is not None  # built in kombu's __init__
        started = time.monotonic()
        while True:
            try:
                cycle.get(self._deliver, timeout=timeout)
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    raise TimeoutError() from None
                wait = self.idle_wait(timeout)
                if wait is not None:
                    time.sleep(wait)
            else:
                return

    def idle_wait(self, timeout: float | None = None) -> float | None:
        """The sleep after an empty round: short while a channel is saturated (only a task
        ending can change that), else kombu's ``polling_interval``; never past ``timeout``."""
        wait = self.polling_interval
        if any(getattr(channel, "saturated", False) for channel in self.channels):
            wait = SATURATED_WAIT_SECONDS if wait is None else min(wait, SATURATED_WAIT_SECONDS)
        if timeout and wait and wait > timeout:
            wait = timeout
        return wait


@contextlib.contextmanager
def batch_sender(
    app: Celery, send: Callable[..., None], queues: Sequence[str] = ()
) -> Iterator[Callable[..., None]]:
    """A block sending many messages through one producer: yields ``send`` bound to it
    (``send(id, countdown, lane, producer=...)``). ``queues`` (names of ``app``'s queues) are
    declared once here (kombu caches it per connection), so ``send`` may skip declaring its
    queue per message (Celery's ``declare=[]``). On this transport the messages are stored in one
    transaction when the block ends, which raises if that fails. Elsewhere the block is kombu's
    ``Producer.batch()``: on Redis one pipeline of LPUSHes sent when the block ends (one round
    trip and one client instead of one of each per message; raises if it fails, though some
    LPUSHes may have landed: the ledger claim absorbs a row woken twice); on RabbitMQ, which
    kombu does not batch, each message is sent at once as ``send`` alone would."""
    with app.producer_or_acquire() as producer:
        for name in queues:
            producer.maybe_declare(app.amqp.queues[name])
        channel = producer.channel
        batch = channel.batch() if isinstance(channel, Channel) else producer.batch(BATCH_LIMIT)
        with batch:
            yield functools.partial(send, producer=producer)
