"""Reconciliation for real: beat schedules, a worker polls on ``<prefix>.poll`` and captures, on
the embedded stack and on PostgreSQL + Redis + S3 (moto server). Nothing is patched; the Telnyx
emulator answers over HTTP.

* a recording whose webhook never came is stored once, from the poll;
* a webhook and a poll (and a backfill) racing for one recording store one object;
* ``callrec backfill`` (a separate process) with ``--dry-run`` and for real;
* a 429 seen by the worker pauses the account for every process.

Two accounts of one provider, one broken: ``test_accounts_end_to_end.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from emulators.telnyx import EmulatedRecording
from ledger import Recording
from ledger.account_state import PollState, paused_until, poll_state
from ledger.models import utcnow
from storage import recording_key
from tests.e2e.stack import Stack, audio_key, stack_of_kind
from tests.fixtures.callrec import REPO, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

POLLING = {"CALLREC_POLL_INTERVAL_SECONDS": "10"}  # beat checks every 2 s, polls every 10 s
STACKS = ["embedded", "postgres-redis-s3"]


@pytest.fixture(scope="module", params=STACKS, ids=STACKS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from stack_of_kind(request, tmp_path_factory, beat=True, **POLLING)


@pytest.fixture(autouse=True)
def _clean_faults(stack: Stack) -> Iterator[None]:
    stack.emulator.clear_faults()
    yield
    stack.emulator.clear_faults()


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


def rows_of(stack: Stack, rec: EmulatedRecording) -> list[Recording]:
    return [row for row in stack.rows() if row.recording_key == rec.id]


def state(stack: Stack, account: str = "default") -> PollState | None:
    return poll_state(stack.sessions, "telnyx", account)


def wait_for_next_poll(stack: Stack, account: str = "default") -> PollState:
    """Block until a poll of the account finishes after now (successfully or not)."""
    start = utcnow()

    def polled() -> PollState | None:
        current = state(stack, account)
        done = (
            [t for t in (current.last_success_at, current.last_failure_at) if t] if current else []
        )
        return current if any(t > start for t in done) else None

    return wait_for(polled, 45, 0.3, f"a poll of telnyx/{account}")  # type: ignore[no-any-return]


def backfill(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callrec_cli", "backfill", "--provider", "telnyx", *args],
        env={**os.environ, **stack.env, "PYTHONPATH": str(REPO)},
        cwd=stack.processes[0].log_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dropped_webhook_arrives_via_reconciliation_exactly_once(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=120_000, started_at=ago(minutes=3))
    row = stack.wait_final(rec.id, timeout=60)  # no webhook was ever sent
    assert row.state == "stored" and row.source == "poll" and row.attempts == 1
    assert row.sha256 == rec.audio("mp3").sha256() == stack.stored_bytes_sha256(audio_key(rec))
    assert stack.metadata(audio_key(rec))["account"] == "default"
    wait_for_next_poll(stack)  # later polls list it again (overlap) and change nothing
    wait_for_next_poll(stack)
    (again,) = rows_of(stack, rec)
    assert (again.id, again.state, again.attempts) == (row.id, "stored", 1)
    current = state(stack)
    assert current is not None and current.watermark is not None and current.last_error is None


def test_webhook_poll_and_backfill_racing_store_one_object(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=150_000, started_at=ago(minutes=1))
    since = ago(minutes=10).isoformat()
    until = datetime.now(UTC).isoformat()
    results: list[subprocess.CompletedProcess[str]] = []
    racer = threading.Thread(
        target=lambda: results.append(backfill(stack, "--since", since, "--until", until))
    )
    racer.start()
    body = stack.signer.recording_saved_body(rec)
    statuses = stack.send_concurrently(body, 4)
    racer.join(150)
    assert statuses == [200] * 4 and results and results[0].returncode == 0, results
    row = stack.wait_final(rec.id)
    assert row.state == "stored"
    assert len(rows_of(stack, rec)) == 1
    assert row.sha256 == stack.stored_bytes_sha256(audio_key(rec))
    # One object for the recording: no second format, no second key.
    assert stack.storage.stat(recording_key("telnyx", "default", rec.id, "wav")) is None


def test_backfill_dry_run_then_for_real(stack: Stack) -> None:
    old = [
        stack.emulator.add_recording(size=40_000, started_at=ago(days=3, minutes=n))
        for n in range(3)
    ]
    mark = state(stack)
    since, until = ago(days=3, hours=1).isoformat(), ago(days=2, hours=23).isoformat()
    dry = backfill(stack, "--since", since, "--until", until, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert sorted(
        line.split()[1] for line in dry.stdout.splitlines() if line.startswith("missing")
    ) == sorted(r.id for r in old)
    assert "page 1: 3 recordings listed, 3 missing" in dry.stderr
    assert "done: 1 pages, 3 recordings listed, 3 missing" in dry.stdout
    assert all(not rows_of(stack, rec) for rec in old)  # a dry run writes nothing
    real = backfill(stack, "--since", since, "--until", until)
    assert real.returncode == 0, real.stderr
    assert "3 new (published for capture)" in real.stdout
    for rec in old:
        row = stack.wait_final(rec.id)
        assert row.state == "stored" and row.source == "poll"
        assert row.sha256 == stack.stored_bytes_sha256(audio_key(rec))
    after = state(stack)
    if mark is not None and mark.watermark is not None:  # backfill never moves it back
        assert after is not None and after.watermark is not None
        assert after.watermark >= mark.watermark
    again = backfill(stack, "--since", since, "--until", until, "--dry-run")
    assert "done: 1 pages, 3 recordings listed, 0 missing" in again.stdout


def test_a_rate_limit_seen_by_the_worker_pauses_the_account_everywhere(stack: Stack) -> None:
    first = stack.emulator.add_recording(size=20_000, started_at=ago(minutes=1))
    second = stack.emulator.add_recording(size=20_000, started_at=ago(minutes=1))
    stack.emulator.inject("api", "429", retry_after=6)
    stack.announce(first)  # the worker's fetch (or a poll) meets the 429 and pauses the account
    until = wait_for(
        lambda: paused_until(stack.sessions, "telnyx", "default"), 30, 0.1, "the pause"
    )
    resume = time.monotonic() + (until - utcnow()).total_seconds()
    stack.announce(second)
    # Another process (this test) sees it: a backfill refuses to call the API meanwhile.
    refused = backfill(stack, "--since", ago(minutes=5).isoformat(), "--until", ago().isoformat())
    assert refused.returncode == 1 and "paused by a rate limit until" in refused.stderr
    for rec in (first, second):
        row = stack.wait_final(rec.id, timeout=60)
        assert row.state == "stored" and row.sha256 == rec.audio("mp3").sha256()
    fetched = [
        r.at
        for r in stack.emulator.requests
        if r.method == "GET" and r.path.endswith(f"/recordings/{second.id}")
    ]
    assert fetched and min(fetched) >= resume - 0.5  # not one call for it during the pause
    assert rows_of(stack, second)[0].attempts == 1  # deferrals cost no attempt
