"""The relay publishes every newly accepted row once and records it; broker errors never
lose a row or stop the loop."""

from __future__ import annotations

import threading
from pathlib import Path

from ledger import Recording, accept_refs, migrate
from providers.base import RecordingRef
from tests.fixtures.callrec import base_env, settings_from
from workers.relay import relay
from workers.runtime import build_runtime


def test_relay_publishes_new_rows_once(tmp_path: Path) -> None:
    sent: list[int] = []
    settings = settings_from(base_env(tmp_path))
    migrate(settings.database_url)
    runtime = build_runtime(settings, lambda rid, _countdown, _lane: sent.append(rid))
    try:
        ids = accept_refs(
            runtime.sessions,
            "telnyx",
            "default",
            [RecordingRef(f"r{i}") for i in range(3)],
            source="t",
        ).new_ids
        assert relay(runtime, threading.Event(), max_rounds=3) == 3
        assert sent == ids  # the later rounds found nothing new
        with runtime.sessions() as session:
            assert all(session.get(Recording, i).enqueued_at is not None for i in ids)
    finally:
        runtime.close()


def test_broker_errors_leave_rows_unpublished(tmp_path: Path) -> None:
    def refuse(_rid: int, _countdown: float | None, _lane: str) -> None:
        raise ConnectionError("broker down")

    settings = settings_from(base_env(tmp_path, CALLREC_RELAY_INTERVAL_SECONDS="0.01"))
    migrate(settings.database_url)
    runtime = build_runtime(settings, refuse)
    try:
        (row_id,) = accept_refs(
            runtime.sessions, "telnyx", "default", [RecordingRef("r")], source="t"
        ).new_ids
        stop = threading.Event()
        stop.set()  # one pass would wait 2 s after the error: stop right away
        assert relay(runtime, threading.Event(), max_rounds=1) == 0
        with runtime.sessions() as session:
            assert session.get(Recording, row_id).enqueued_at is None
    finally:
        runtime.close()
