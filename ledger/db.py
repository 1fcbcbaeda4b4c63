"""Engines and sessions for the ledger, and running its migrations.

SQLite (the embedded default) is opened in WAL mode with a busy timeout, so the web process,
worker children and beat can write concurrently, and ``synchronous=FULL`` so an acknowledged
webhook survives a power cut, not only a crash.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["begin_write", "make_engine", "make_session_factory", "migrate"]

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 15_000
MIGRATION_LOCK_ID = 0x63616C6C  # 'call'


class _LedgerConnection(sqlite3.Connection):
    """A pysqlite connection whose write transactions queue on a file lock first.

    SQLite's own busy handler polls with growing sleeps (up to 100 ms), so writers from several
    processes (gunicorn workers, Celery children) waiting for ``BEGIN IMMEDIATE`` made a ~1 s
    p99 in bench/receiver.py. A blocking ``flock`` hands the lock over the moment it is free.
    The file lock is taken before ``BEGIN IMMEDIATE`` and released after COMMIT or ROLLBACK.
    """

    _lock_fd: int | None = None
    _locked: bool = False

    def attach_lock(self, path: str) -> None:
        self._lock_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def begin_write(self) -> None:
        if self._lock_fd is not None and not self._locked:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._locked = True
        try:
            self.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._unlock()
            raise

    def _unlock(self) -> None:
        if self._locked and self._lock_fd is not None:
            self._locked = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._unlock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._unlock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._unlock()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def begin_write(dbapi_connection: Any) -> None:
    """Start a write transaction on a raw DBAPI connection of :func:`make_engine`'s pool.

    SQLite (autocommit at the DBAPI level, see ``_pragmas``): the write lock, then ``BEGIN
    IMMEDIATE``. PostgreSQL (psycopg): nothing, its first statement opens the transaction.
    """
    if isinstance(dbapi_connection, _LedgerConnection):
        dbapi_connection.begin_write()


def make_engine(url: str, *, pre_ping: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets its folder created, its pragmas and its write lock.

    ``pre_ping=False`` (the web process) saves a round trip per request; a connection found
    dead then fails one request with 503, which the provider retries.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        lock_path = None
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            lock_path = path + ".writelock"
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "factory": _LedgerConnection},
            **kwargs,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself (pysqlite's implicit transactions defer the
            # write lock and then fail with "database is locked" instead of waiting).
            dbapi_connection.isolation_level = None
            if lock_path is not None:
                dbapi_connection.attach_lock(lock_path)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            # Take the write lock up front: every ledger transaction that reads then writes
            # would otherwise deadlock-upgrade and fail instead of waiting for busy_timeout.
            connection.connection.dbapi_connection.begin_write()

        return engine
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=5, max_overflow=10, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def migrate(url: str) -> None:
    """Bring the ledger schema to the newest revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Several processes may start at once: one migrates, the others wait.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()
