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

Celery uses this transport through ``broker_transport`` (workers/celery_config.py): kombu
takes an import path only from that explicit setting, never from a URL.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from json import dumps
from typing import Any

from celery import Celery
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import insert

__all__ = ["BATCH_LIMIT", "TRANSPORT", "Channel", "Transport", "batch_sender"]

#: Most broker operations a Redis pipeline buffers before it sends them (kombu's own default).
BATCH_LIMIT = 1000

#: ``broker_transport`` value naming :class:`Transport` (with the ``sqla+`` URL prefix removed).
TRANSPORT = f"{__name__}:Transport"


class Channel(kombu_sqla.Channel):
    """kombu's SQLAlchemy channel; :meth:`batch` stores several publishes in one transaction."""

    _pending: list[tuple[str, str]] | None = None

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


@contextlib.contextmanager
def batch_sender(app: Celery, send: Callable[..., None]) -> Iterator[Callable[..., None]]:
    """A block sending many messages through one producer: yields ``send`` bound to it
    (``send(id, countdown, lane, producer=...)``). On this transport the messages are stored in one
    transaction when the block ends, which raises if that fails. Elsewhere the block is kombu's
    ``Producer.batch()``: on Redis one pipeline of LPUSHes sent when the block ends (one round
    trip and one client instead of one of each per message; raises if it fails, though some
    LPUSHes may have landed: the ledger claim absorbs a row woken twice); on RabbitMQ, which
    kombu does not batch, each message is sent at once as ``send`` alone would."""
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        batch = channel.batch() if isinstance(channel, Channel) else producer.batch(BATCH_LIMIT)
        with batch:
            yield functools.partial(send, producer=producer)
