"""Group commit for the webhook hot path: concurrent accepts of one process share a transaction.

Every accepted webhook must be durable before its 2xx: a SQLite fsync (``synchronous=FULL``) or
a PostgreSQL WAL flush, plus a BEGIN/COMMIT round trip and, on SQLite, the cross-process write
lock. Paid once per request, in series behind the write lock, that flush is what bounded the
receiver (bench/receiver.py). Here the request threads of one process take turns as *leader*:
a thread that arrives while no commit is running takes every accept queued so far (itself
included), runs them in one transaction, and wakes the others with their own results; a thread
that arrives during a commit queues and rides the next one. There is no writer thread, so
nothing to restart after a fork and nothing left running at exit.

Guarantees, per accept:

* its 2xx is sent only after the commit that holds its rows (no result before the commit);
* a failing shared transaction is retried one accept per transaction, so one bad delivery
  never fails its neighbours; an accept that still fails raises to its own request only
  (the view answers 503 and the provider delivers it again);
* duplicates inside one batch behave as across batches: the second insert of a delivery or
  recording finds the first (``ON CONFLICT DO NOTHING`` sees rows of its own transaction).

The leader runs the transaction on a DBAPI connection the committer keeps checked out of the
engine's pool (one leader at a time, so one connection), with the accept statements of
ledger/accept.py: no SQLAlchemy ``Connection``/transaction objects per batch. A connection that
fails is invalidated (closed and dropped from the pool); the next batch opens a fresh one, so
the one-by-one retry after a failed shared batch already runs on a new connection. A forked
child never uses its parent's connection.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from ledger.accept import AcceptResult, accept_rows, sql_for
from ledger.db import begin_write
from ledger.models import utcnow
from providers.base import WebhookEvent

__all__ = ["Committed", "GroupCommitter", "OnCommit"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64

#: One committed accept: (provider, account, event, result).
Committed = tuple[str, str, WebhookEvent, AcceptResult]
#: Called once per committed transaction with its accepts (logging, metrics), by the thread
#: that led it, after the waiters were woken; it must be thread-safe and should not raise.
OnCommit = Callable[[Sequence[Committed]], None]


@dataclass
class _Pending:
    provider: str
    account: str
    event: WebhookEvent
    result: AcceptResult | None = None
    error: BaseException | None = None
    done: bool = False


class GroupCommitter:
    """Accept webhook events, committing those that arrive together in one transaction."""

    def __init__(
        self, engine: Engine, max_batch: int = DEFAULT_MAX_BATCH, on_commit: OnCommit | None = None
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        self._connection: PoolProxiedConnection | None = None
        self._pid = os.getpid()
        #: Sizes of the transactions run so far, for tests and benchmarks (bounded counter).
        self.batches = 0
        self.accepts = 0

    def accept(self, provider: str, account: str, event: WebhookEvent) -> AcceptResult:
        """Record one verified event; returns once it is committed, raises if it is not."""
        item = _Pending(provider, account, event)
        led: list[list[_Pending]] = []  # batches this thread committed, for ``on_commit``
        with self._cond:
            self._queue.append(item)
            while not item.done:
                if self._committing:
                    self._cond.wait()
                    continue
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                self._committing = True
                self._cond.release()
                try:
                    self._commit(batch)
                    led.append(batch)
                finally:
                    self._cond.acquire()
                    self._committing = False
                    self._cond.notify_all()
        for batch in led:
            self._after_commit(batch)
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _commit(self, batch: list[_Pending]) -> None:
        """Commit ``batch`` together, or each alone if that fails; mark every item done."""
        try:
            try:
                self._run(batch)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                    return
                logger.warning(
                    "shared accept transaction of %s failed (%s); committing each alone",
                    len(batch),
                    type(exc).__name__,
                )
                for item in batch:
                    try:
                        self._run([item])
                    except Exception as single:
                        item.error = single
        except BaseException as exc:  # never leave a waiter without an answer
            for item in batch:
                if item.result is None and item.error is None:
                    item.error = exc
            raise
        finally:
            for item in batch:
                if item.result is None and item.error is None:
                    item.error = RuntimeError("accept was not committed")
                item.done = True

    def _run(self, batch: list[_Pending]) -> None:
        connection = self._checked_out()
        try:
            cursor = connection.cursor()
            begin_write(connection.dbapi_connection)
            results = accept_rows(
                cursor,
                sql_for(self._engine.dialect),
                [(item.provider, item.account, item.event) for item in batch],
                utcnow(),
            )
            cursor.close()
            self._commit_transaction(connection)
        except BaseException:
            self._discard(connection)
            raise
        # Only after COMMIT returned: a result handed out earlier could 2xx an uncommitted row.
        for item, result in zip(batch, results, strict=True):
            item.result = result
        self.batches += 1
        self.accepts += len(batch)

    def _after_commit(self, batch: list[_Pending]) -> None:
        committed = [
            (item.provider, item.account, item.event, item.result)
            for item in batch
            if item.result is not None
        ]
        if self._on_commit is None or not committed:
            return
        try:
            self._on_commit(committed)
        except Exception:  # committed all the same: their 2xx must not depend on a log line
            logger.exception("the after-commit hook failed")

    def _commit_transaction(self, connection: Any) -> None:
        """COMMIT the batch's transaction (a seam for tests that hold or fail the commit)."""
        connection.commit()

    def _checked_out(self) -> PoolProxiedConnection:
        if self._pid != os.getpid():  # forked: the parent's connection is not ours to use
            self._connection, self._pid = None, os.getpid()
        if self._connection is None:
            self._connection = self._engine.raw_connection()
        return self._connection

    def _discard(self, connection: PoolProxiedConnection) -> None:
        """Roll back and drop a connection whose transaction failed; never raises."""
        self._connection = None
        for step in (connection.rollback, connection.invalidate):
            try:
                step()
            except Exception:  # a dead connection: invalidating it is all that is left
                logger.debug("ledger connection %s failed", step.__name__, exc_info=True)

    def close(self) -> None:
        """Return the kept connection to the pool (tests, shutdown)."""
        with self._cond:
            connection, self._connection = self._connection, None
        if connection is not None and self._pid == os.getpid():
            connection.close()
