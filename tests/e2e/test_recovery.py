"""Nothing accepted is lost: rows the broker never saw, or whose worker died, are re-driven
by the sweeper (a beat task) and end stored once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ledger import accept_refs
from providers.base import RecordingRef
from tests.e2e.stack import audio_key, start_stack
from tests.fixtures.callrec import start_relay, start_worker, wait_for
from tests.fixtures.servers import REDIS_URL, require_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_rows_never_published_are_swept_and_stored(tmp_path: Path) -> None:
    """A web process that committed rows and died before publishing them (embedded stack)."""
    stack = start_stack(tmp_path, beat=True, relay=False)
    try:
        recs = [stack.emulator.add_recording(size=20_000) for _ in range(3)]
        result = accept_refs(
            stack.sessions,
            "telnyx",
            "default",
            [RecordingRef(recording_id=rec.id) for rec in recs],
            source="test",
        )
        assert len(result.new_ids) == 3  # committed, and no message published for them
        for rec in recs:
            row = stack.wait_final(rec.id, timeout=60)
            assert row.state == "stored"
            assert row.sha256 == stack.stored_bytes_sha256(audio_key(rec))
    finally:
        stack.close()


@pytest.mark.redis
def test_webhooks_are_acknowledged_while_the_broker_is_down(tmp_path: Path) -> None:
    """The relay cannot reach its broker: webhooks still get a fast 2xx (the web process never
    touches the broker), the rows wait in the ledger, and the sweeper publishes them through
    the real broker."""
    require_server("Redis", REDIS_URL)
    stack = start_stack(tmp_path, beat=True, relay=False, CALLREC_BROKER_URL=REDIS_URL)
    try:
        stuck_relay = tmp_path / "stuck-relay"
        stuck_relay.mkdir()
        dead_broker = {**stack.env, "CALLREC_BROKER_URL": "redis://127.0.0.1:9/0"}
        stack.processes.append(start_relay(dead_broker, stuck_relay, "dead-broker-relay"))
        recs = [stack.emulator.add_recording(size=30_000) for _ in range(3)]
        for rec in recs:
            started = time.monotonic()
            stack.announce(rec)
            assert time.monotonic() - started < 2
        for rec in recs:
            assert stack.wait_final(rec.id, timeout=60).state == "stored"
        assert "sweeper published" in stack.processes[0].log()  # the worker ran the sweep
    finally:
        stack.close()


def test_worker_killed_mid_download_is_redriven(tmp_path: Path) -> None:
    """SIGKILL the whole worker while it streams; the embedded broker forgets the message
    (kombu's SQLite transport never redelivers), the claim's lease expires, the sweeper
    re-publishes, a new worker stores the recording once, byte-exact."""
    stack = start_stack(
        tmp_path, beat=True, CALLREC_TASK_TIME_LIMIT_SECONDS="6", CALLREC_STUCK_AFTER_SECONDS="8"
    )
    try:
        rec = stack.emulator.add_recording(size=200_000)
        stack.emulator.inject("audio", "slow", seconds=30)
        stack.announce(rec)
        wait_for(
            lambda: (row := stack.row(rec.id)) is not None and row.state == "fetching",
            20,
            what="the capture to start",
        )
        worker = stack.processes[0]
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(10)
        stack.emulator.clear_faults()
        second = tmp_path / "second"
        second.mkdir()
        stack.processes.append(start_worker(stack.env, second))
        row = stack.wait_final(rec.id, timeout=90)
        assert row.state == "stored" and row.attempts == 2
        assert stack.stored_bytes_sha256(audio_key(rec)) == rec.audio("mp3").sha256()
    finally:
        stack.close()
