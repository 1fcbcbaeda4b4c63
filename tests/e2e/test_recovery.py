"""Nothing accepted is lost: rows the broker never saw are re-driven by the sweeper (a beat
task) and end stored once. (A worker killed mid-download: ``tests/faults/test_kills.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import accept_refs
from providers.base import RecordingRef
from tests.e2e.stack import audio_key, start_stack

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
