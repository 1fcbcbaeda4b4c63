"""The receiver benchmark's floors: the simplest durable accepts, for ``--floor``.

What any design that commits each webhook before its 2xx must do at least, as cheaply as
Python allows: the bare route's ``verify``, the provider's ``parse`` (as callrec's view), then
an ``INSERT`` of the delivery id into one table (``bench_floor_accepts``, in the stack's own
ledger database; SQLite with the ledger's WAL and ``synchronous=FULL``) on plain DBAPI
connections: no SQLAlchemy, no recordings row, no relay, no logging, no metrics. Two of them:

* ``app`` (target ``floor``): one autocommitted INSERT per request, a connection per thread;
* ``batched_app`` (target ``floor-batched``): the requests of one process that arrive
  together share one multi-row INSERT and one COMMIT, as callrec's group commit does
  (:class:`BatchedInserts`, the same leader protocol with nothing else in it).

Their req/s against the bare route's, in the same run, is what a durable accept keeps of the
bare throughput on this machine; callrec's ratio is judged against them. Serve them with
``gunicorn bench.floor_app:app`` or ``gunicorn bench.floor_app:batched_app``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask

from bench.baseline_app import verifying_app
from config.settings import load_settings
from providers.base import Provider, WebhookRequest

__all__ = ["BatchedInserts", "app", "batched_app", "create_floor_app"]

CREATE = "CREATE TABLE IF NOT EXISTS bench_floor_accepts (delivery TEXT PRIMARY KEY)"
EXISTS = "SELECT 1 FROM bench_floor_accepts LIMIT 1"
#: Rows as ``(?)`` groups; one statement on an autocommit connection is its own transaction.
INSERT_ROWS = "INSERT INTO bench_floor_accepts VALUES {} ON CONFLICT DO NOTHING"


def _connect(database_url: str) -> Any:
    """A new autocommit DBAPI connection to the ledger database, the table created."""
    connection: Any
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(  # any thread: BatchedInserts' leader changes
            database_url.split("///", 1)[-1],
            isolation_level=None,
            timeout=15,
            check_same_thread=False,
        )
        for pragma in ("journal_mode=WAL", "busy_timeout=15000", "synchronous=FULL"):
            connection.execute(f"PRAGMA {pragma}")
    else:
        import psycopg

        dsn = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        connection = psycopg.connect(dsn, autocommit=True)
    try:
        connection.execute(CREATE)
    except Exception:  # another process created it at the same moment (PostgreSQL)
        connection.execute(EXISTS)
    return connection


class BatchedInserts:
    """Inserts of one process's threads, committed together: a thread that finds no commit
    running takes every key queued so far (its own included), inserts them in one statement,
    commits, and wakes the rest; a thread arriving meanwhile queues for the next commit. Each
    ``insert`` returns only after the COMMIT that holds its key, and raises if that failed."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._marker = "?" if database_url.startswith("sqlite") else "%s"
        self._cond = threading.Condition()
        self._queue: list[list[Any]] = []  # [key, outcome]: None, True or the exception
        self._committing = False
        self._connection: Any = None

    def insert(self, key: str) -> None:
        item: list[Any] = [key, None]
        with self._cond:
            self._queue.append(item)
            while item[1] is None:
                if self._committing:
                    self._cond.wait()
                    continue
                batch, self._queue = self._queue, []
                self._committing = True
                self._cond.release()
                outcome: Any = True
                try:
                    self._commit([key for key, _ in batch])
                except Exception as exc:
                    outcome = exc
                finally:
                    self._cond.acquire()
                    for entry in batch:
                        entry[1] = outcome
                    self._committing = False
                    self._cond.notify_all()
        if item[1] is not True:
            raise item[1]

    def _commit(self, keys: list[str]) -> None:
        if self._connection is None:
            self._connection = _connect(self._url)
        connection = self._connection
        groups = ", ".join([f"({self._marker})"] * len(keys))
        try:
            connection.execute(INSERT_ROWS.format(groups), keys)  # autocommitted: one commit
        except Exception:
            self._connection = None
            connection.close()
            raise


def create_floor_app(batched: bool = False) -> Flask:
    """The verify-only app, plus the provider's ``parse`` and a committed INSERT: one per
    request, or (``batched``) one per group of requests that arrive together."""
    settings = load_settings()
    url = settings.database_url
    insert = BatchedInserts(url).insert if batched else _per_thread_insert(url)

    def parse_and_insert(name: str, provider: Provider, webhook: WebhookRequest) -> None:
        event = provider.parse(webhook)
        insert(f"{name}:{event.delivery_id}")

    flask_name = "callrec-bench-floor-batched" if batched else "callrec-bench-floor"
    return verifying_app(flask_name, settings, parse_and_insert)


def _per_thread_insert(database_url: str) -> Callable[[str], None]:
    """One autocommitted INSERT per call, on the calling thread's own connection."""
    statement = INSERT_ROWS.format("(?)" if database_url.startswith("sqlite") else "(%s)")
    local = threading.local()

    def insert(key: str) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = _connect(database_url)
        connection.execute(statement, (key,))

    return insert


app = create_floor_app()
batched_app = create_floor_app(batched=True)
