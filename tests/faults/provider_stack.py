"""What the provider-fault scenarios (R7-R15, R24, R25) share: a Telnyx stack, the emulator's
request log read per recording, and the tally of what was sent against what was stored."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import select

from emulators.telnyx import EmulatedRecording
from ledger.account_state import PollState, poll_state
from ledger.models import RecordingEvent, utcnow
from tests.e2e.stack import Stack
from tests.faults.tally import Tally, tally
from tests.fixtures.callrec import settings_from, wait_for
from workers.celery_config import make_celery, poll_queue

__all__ = [
    "api_gets",
    "audio_statuses",
    "clean_faults",
    "logged_errors",
    "request_poll",
    "states_of",
    "tally_of",
    "wait_for_next_poll",
    "wait_seconds_from",
    "worker_log",
]


def api_gets(stack: Stack, rec: EmulatedRecording) -> list[float]:
    """Arrival times (``time.monotonic()``) of the API requests for ``rec``'s fresh URL."""
    return [
        r.at
        for r in stack.emulator.requests
        if r.method == "GET" and r.path.endswith(f"/recordings/{rec.id}")
    ]


def audio_statuses(stack: Stack, rec: EmulatedRecording) -> list[int]:
    """The status of every audio request for ``rec`` (a cut body still counts as its 200)."""
    return [r.status for r in stack.emulator.requests if r.path.startswith(f"/media/{rec.id}.")]


def tally_of(stack: Stack, recs: Iterable[EmulatedRecording], gone: Iterable[str] = ()) -> Tally:
    """The fault suite's verdict on ``recs`` (``gone``: ids the emulator no longer serves)."""
    missing = set(gone)
    sent = {rec.id: None if rec.id in missing else rec.audio("mp3").sha256() for rec in recs}
    result = tally(stack.sessions, stack.storage, sent)
    print(result.line())
    return result


def states_of(stack: Stack, key: str) -> list[str]:
    """The row's state history (``recording_events``), oldest first."""
    row = stack.row(key)
    assert row is not None, key
    with stack.sessions() as session:
        return list(
            session.execute(
                select(RecordingEvent.state)
                .where(RecordingEvent.recording_id == row.id)
                .order_by(RecordingEvent.at, RecordingEvent.id)
            ).scalars()
        )


def request_poll(stack: Stack, account: str = "default") -> None:
    """Ask the stack's worker for a reconciliation poll of the Telnyx account now, as beat's
    schedule does (``callrec.poll`` on the poll queue)."""
    settings = settings_from(stack.env)
    app = make_celery(settings)
    try:
        app.send_task("callrec.poll", args=["telnyx", account], queue=poll_queue(settings))
    finally:
        app.close()


def worker_log(stack: Stack) -> list[dict[str, Any]]:
    """The worker's JSON log lines (other lines, e.g. a raw traceback, skipped)."""
    entries = []
    for line in stack.processes[0].log().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def logged_errors(stack: Stack) -> list[str]:
    """Log lines of the stack's processes at ERROR or above, or carrying a traceback."""
    lines = [line for process in stack.processes for line in process.log().splitlines()]
    return [
        line
        for line in lines
        if '"level": "error"' in line or '"level": "critical"' in line or "Traceback" in line
    ]


def wait_for_next_poll(stack: Stack, account: str = "default") -> PollState:
    """Block until a poll of the Telnyx account finishes after now (successfully or not)."""
    start = utcnow()

    def polled() -> PollState | None:
        current = poll_state(stack.sessions, "telnyx", account)
        done = (
            [t for t in (current.last_success_at, current.last_failure_at) if t] if current else []
        )
        return current if any(t > start for t in done) else None

    return wait_for(polled, 45, 0.3, f"a poll of telnyx/{account}")  # type: ignore[no-any-return]


def clean_faults(stack: Stack) -> Iterator[Stack]:
    """Body of a fixture yielding ``stack`` with no fault or page cap left from one scenario
    for the next."""
    stack.emulator.clear_faults()
    stack.emulator.max_page_size = None
    yield stack
    stack.emulator.clear_faults()
    stack.emulator.max_page_size = None


def wait_seconds_from(start: float, seconds: float) -> None:
    """Sleep until ``seconds`` after the monotonic time ``start`` (a fault's fixed duration)."""
    remaining = start + seconds - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
