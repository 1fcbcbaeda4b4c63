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
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import Engine

from ledger.accept import AcceptResult, accept_batch
from ledger.models import utcnow
from providers.base import WebhookEvent

__all__ = ["GroupCommitter"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64


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

    def __init__(self, engine: Engine, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._committing = False
        #: Sizes of the transactions run so far, for tests and benchmarks (bounded counter).
        self.batches = 0
        self.accepts = 0

    def accept(self, provider: str, account: str, event: WebhookEvent) -> AcceptResult:
        """Record one verified event; returns once it is committed, raises if it is not."""
        item = _Pending(provider, account, event)
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
                finally:
                    self._cond.acquire()
                    self._committing = False
                    self._cond.notify_all()
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
        now = utcnow()
        with self._engine.begin() as connection:
            results = accept_batch(
                connection, [(item.provider, item.account, item.event) for item in batch], now
            )
        # Only after COMMIT returned: a result handed out earlier could 2xx an uncommitted row.
        for item, result in zip(batch, results, strict=True):
            item.result = result
        self.batches += 1
        self.accepts += len(batch)
