"""The relay publishes every newly accepted row once and records it; broker errors never
lose a row or stop the loop."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger import Recording, accept_refs, migrate
from providers.base import RecordingRef
from tests.fixtures.callrec import RecordedWaits, base_env, settings_from
from workers.relay import BATCH, BROKER_ERROR_PAUSE_SECONDS, relay
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
        stop = RecordedWaits()  # the back-off after the error returns at once
        assert relay(runtime, stop, max_rounds=1) == 0
        assert stop.waits == [BROKER_ERROR_PAUSE_SECONDS]
        with runtime.sessions() as session:
            assert session.get(Recording, row_id).enqueued_at is None
    finally:
        runtime.close()


def test_relay_waits_its_interval_after_a_partial_batch_and_goes_on_after_a_full_one(
    tmp_path: Path,
) -> None:
    """Rows accepted while it waits go out together: a steady stream is published in batches,
    not a handful per ledger query (bench/receiver.py's relay CPU)."""
    batches: list[int] = []
    settings = settings_from(base_env(tmp_path, CALLREC_RELAY_INTERVAL_SECONDS="0.3"))
    migrate(settings.database_url)
    runtime = build_runtime(settings, lambda *_: None)
    publish = runtime.publish

    def recorded(ids: Sequence[int], *args: Any) -> list[int]:
        batches.append(len(ids))
        return publish(ids, *args)

    runtime.publish = recorded  # type: ignore[method-assign]
    try:
        refs = [RecordingRef(f"r{i}") for i in range(BATCH + 2)]
        accept_refs(runtime.sessions, "telnyx", "default", refs, source="t")
        stop = RecordedWaits()
        assert relay(runtime, stop, max_rounds=3) == BATCH + 2
        # full batch: on at once; 2 left: wait the interval; nothing: the idle wait
        assert batches == [BATCH, 2]
        assert stop.waits == [0.3, 0.3]
    finally:
        runtime.close()
