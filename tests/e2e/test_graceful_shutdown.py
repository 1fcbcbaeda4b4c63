"""SIGTERM to a worker mid-download: the capture is released at once (not left to the lease),
a worker stores the recording exactly once, byte-exact, and the release is not counted as an
attempt. (The released row is republished at once: the stopping worker may still run it from
its prefetched messages, or the second one does.)"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledger import RecordingEvent
from tests.e2e.stack import Stack, audio_key, start_stack
from tests.fixtures.callrec import start_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _sigterm_mid_download(stack: Stack, tmp_path: Path, *, whole_group: bool) -> None:
    rec = stack.emulator.add_recording(size=300_000)
    stack.emulator.inject("audio", "slow", seconds=60)  # the audio GET hangs for a minute
    stack.announce(rec)
    wait_for(
        lambda: (row := stack.row(rec.id)) is not None and row.state == "fetching",
        30,
        what="the capture to start",
    )
    time.sleep(1)  # in the audio request now
    worker = stack.processes[0]
    started = time.monotonic()
    if whole_group:
        worker.send_signal(signal.SIGTERM)  # honcho, systemd: every process of the group
    else:
        os.kill(worker.pid, signal.SIGTERM)  # docker, kubernetes: the main process only
    worker.process.wait(30)
    # Released and gone well before the 60 s download or the 25 s lease.
    assert time.monotonic() - started < 15, worker.log()[-3000:]
    assert "capture released for another worker" in worker.log(), worker.log()[-3000:]
    stack.emulator.clear_faults()
    second = tmp_path / "second"
    second.mkdir()
    stack.processes.append(start_worker(stack.env, second))
    row = stack.wait_final(rec.id, timeout=60)
    # The released attempt is not counted: one attempt stored it.
    assert row.state == "stored" and row.attempts == 1
    assert row.sha256 == rec.audio("mp3").sha256()
    assert stack.stored_bytes_sha256(audio_key(rec)) == rec.audio("mp3").sha256()
    assert sorted(item.key for item in stack.storage.list_objects()) == sorted(
        [audio_key(rec), audio_key(rec).removesuffix(".mp3") + ".json"]
    )
    with stack.sessions() as session:
        stored_events = session.execute(
            select(func.count())
            .select_from(RecordingEvent)
            .where(RecordingEvent.recording_id == row.id, RecordingEvent.state == "stored")
        ).scalar_one()
        released = session.execute(
            select(func.count())
            .select_from(RecordingEvent)
            .where(
                RecordingEvent.recording_id == row.id,
                RecordingEvent.detail == "released: the worker shut down mid-capture",
            )
        ).scalar_one()
    assert (stored_events, released) == (1, 1)


def test_sigterm_to_the_process_group_releases_the_capture(tmp_path: Path) -> None:
    stack = start_stack(tmp_path)
    try:
        _sigterm_mid_download(stack, tmp_path, whole_group=True)
    finally:
        stack.close()


def test_sigterm_to_the_main_process_releases_after_the_grace(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, CALLREC_SHUTDOWN_GRACE_SECONDS="1")
    try:
        _sigterm_mid_download(stack, tmp_path, whole_group=False)
    finally:
        stack.close()
