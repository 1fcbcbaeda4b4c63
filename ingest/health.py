"""``/healthz`` (the process answers) and ``/readyz`` (ledger, broker and storage reachable).

For a load balancer: ``/readyz`` answers 200 when every check passed, else 503, with JSON
naming each check's outcome. The checks run concurrently, each in its own daemon thread
bounded by ``CALLREC_READYZ_TIMEOUT_SECONDS``: a hung database, broker or S3 endpoint makes
the answer "timed out", never a hung request (the thread is left to its own I/O timeouts).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

__all__ = ["health", "run_checks"]

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Any:
    return jsonify(status="ok")


def run_checks(checks: dict[str, Callable[[], None]], timeout: float) -> dict[str, str]:
    """Run every check at once; each is "ok", "unreachable (<error type>)" or "timed out"."""
    results: dict[str, str] = {}
    lock = threading.Lock()

    def run(name: str, check: Callable[[], None]) -> None:
        try:
            check()
            outcome = "ok"
        except Exception as exc:
            outcome = f"unreachable ({type(exc).__name__})"
        with lock:
            results.setdefault(name, outcome)

    threads = [
        threading.Thread(target=run, args=item, name=f"readyz-{item[0]}", daemon=True)
        for item in checks.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    with lock:
        for name in checks:
            results.setdefault(name, f"timed out after {timeout:g}s")
        return {name: results[name] for name in checks}


def _storage() -> Any:
    """The web process's storage handle, built on first use (after the fork)."""
    from storage import storage_from_url

    cached = current_app.extensions.get("callrec.storage")
    if cached is None:
        settings = current_app.extensions["callrec"].settings
        cached = storage_from_url(
            settings.storage_url,
            s3_endpoint_url=settings.s3_endpoint_url,
            s3_region=settings.s3_region,
            part_size=settings.s3_part_size_bytes,
        )
        current_app.extensions["callrec.storage"] = cached
    return cached


@health.get("/readyz")
def readyz() -> Any:
    from ingest.app import state

    current = state()
    timeout = current.settings.readyz_timeout_seconds

    def ledger() -> None:
        with current.sessions() as session:
            session.execute(text("SELECT 1"))

    def broker() -> None:
        with current.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)

    def storage() -> None:
        store.check()

    try:
        store = _storage()
        storage_check = storage
    except Exception as exc:  # a bad storage URL was refused at start-up; a mkdir can fail
        error = exc

        def storage_check() -> None:
            raise error

    checks = run_checks({"ledger": ledger, "broker": broker, "storage": storage_check}, timeout)
    ready = all(value == "ok" for value in checks.values())
    return jsonify(status="ready" if ready else "not ready", checks=checks), 200 if ready else 503
