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

from flask import Flask, jsonify, request

from config.settings import load_settings
from ingest.webhooks import webhook_request
from providers.errors import WebhookRejected
from providers.http import new_http_client
from providers.registry import Accounts

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
    """A Flask app with ``POST /webhooks/<provider>`` (verify, parse, one INSERT) and
    ``GET /healthz``."""
    settings = load_settings()
    accounts = Accounts(settings, new_http_client(settings.http_timeout_seconds))
    floor = Flask("callrec-bench-floor")
    floor.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    base = settings.public_base_url
    url = settings.database_url
    insert = INSERT.format("?" if url.startswith("sqlite") else "%s")
    local = threading.local()

    @floor.post("/webhooks/<name>")
    def receive(name: str) -> Any:
        provider = accounts.provider(name)
        webhook = webhook_request(request.get_data(cache=False), base)
        try:
            provider.verify(webhook)
            event = provider.parse(webhook)
        except WebhookRejected as exc:
            return jsonify(error=exc.reason), exc.status
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = _connect(url)
        connection.execute(insert, (f"{name}:{event.delivery_id}",))
        return jsonify(status="accepted"), 200

    @floor.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return floor


app = create_floor_app()
