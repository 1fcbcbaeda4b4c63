"""The receiver benchmark's floor: the simplest durable accept, for ``--floor``.

What any design that commits each webhook before its 2xx must do at least, as cheaply as
Python allows: the bare route's ``verify``, the provider's ``parse`` (as callrec's view), then
one ``INSERT`` of the delivery id, committed on its own, on a DBAPI connection per request
thread (no SQLAlchemy, no group commit, no recordings row, no relay, no logging, no metrics)
in the stack's own ledger database (table ``bench_floor_accepts``; SQLite with the ledger's
WAL and ``synchronous=FULL``). Its req/s against the bare route's, in the same run, is the
most a durable accept can keep of the bare throughput on this machine; callrec's ratio is
judged against it. Serve it with ``gunicorn bench.floor_app:app``.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from flask import Flask

from bench.baseline_app import verifying_app
from config.settings import load_settings
from providers.base import Provider, WebhookRequest

__all__ = ["app", "create_floor_app"]

CREATE = "CREATE TABLE IF NOT EXISTS bench_floor_accepts (delivery TEXT PRIMARY KEY)"
EXISTS = "SELECT 1 FROM bench_floor_accepts LIMIT 1"
INSERT = "INSERT INTO bench_floor_accepts VALUES ({}) ON CONFLICT DO NOTHING"


def _connect(database_url: str) -> Any:
    """A new autocommit DBAPI connection to the ledger database, the table created."""
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(
            database_url.split("///", 1)[-1], isolation_level=None, timeout=15
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


def create_floor_app() -> Flask:
    """The verify-only app, plus the provider's ``parse`` and one committed INSERT."""
    settings = load_settings()
    url = settings.database_url
    insert = INSERT.format("?" if url.startswith("sqlite") else "%s")
    local = threading.local()

    def parse_and_insert(name: str, provider: Provider, webhook: WebhookRequest) -> None:
        event = provider.parse(webhook)
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = _connect(url)
        connection.execute(insert, (f"{name}:{event.delivery_id}",))

    return verifying_app("callrec-bench-floor", settings, parse_and_insert)


app = create_floor_app()
