"""kombu's Redis transport with one fix: a worker survives the loss of its Redis connection.

Celery 5.7 handles a lost broker connection by ``connection.collect()`` (which drops the
transport's link to its ``Connection``) followed by ``connection.close()``. Closing the Redis
channel then restores its unacked messages through a new Redis client, built from that dropped
link: ``AttributeError: 'NoneType' object has no attribute 'hostname'`` (kombu
``redis.Channel._connparams``), which ``ignore_errors`` does not catch. The worker logs
"Unrecoverable error" and hangs in its shutdown, consuming nothing, instead of reconnecting
(found by the R3 fault test: ``kill -9`` of Redis under load). Same family as kombu#582/#970.

Skipping that restore loses nothing: the messages stay in Redis' unacked set, and any consumer
(this worker once reconnected) restores them after ``visibility_timeout``; the ledger claim
absorbs the duplicate if a copy was already running.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

__all__ = ["Transport"]

logger = logging.getLogger(__name__)


class QoS(redis.QoS):
    """Leaves unacked messages to the visibility timeout once the connection is gone."""

    def _collected(self) -> bool:
        """The channel or its transport was closed after a connection loss."""
        return getattr(self.channel.connection, "client", None) is None

    def restore_unacked(self, client: Any = None) -> None:
        if client is None and self._collected():
            logger.warning(
                "broker connection already closed: %s unacked message(s) left to Redis' "
                "visibility timeout",
                len(self._delivered),
            )
            self._delivered.clear()
            return
        super().restore_unacked(client)

    def ack(self, delivery_tag: Any) -> None:
        if self._collected():  # redelivered after visibility_timeout; the ledger says stored
            logger.info("broker connection already closed: ack left to the visibility timeout")
            self._delivered.pop(delivery_tag, None)
            return
        super().ack(delivery_tag)


class Channel(redis.Channel):
    QoS = QoS


class Transport(redis.Transport):
    Channel = Channel
