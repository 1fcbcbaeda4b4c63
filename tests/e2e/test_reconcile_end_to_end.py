"""Reconciliation for real: beat schedules, a worker polls on ``<prefix>.poll`` and captures, on
the embedded stack and on PostgreSQL + Redis + S3 (moto server). Nothing is patched; the Telnyx
emulator answers over HTTP.

* ``callrec backfill`` (a separate process) with ``--dry-run`` and for real.

A missed webhook found by the poll (R25), webhook/poll/backfill races (R14) and a 429 pausing
the account everywhere (R7) are the fault suite's: ``tests/faults/``.

Two accounts of one provider, one broken: ``test_accounts_end_to_end.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulators.telnyx import EmulatedRecording
from ledger import Recording
from ledger.account_state import PollState, poll_state
from tests.e2e.stack import Stack, ago, audio_key, backfill, stack_of_kind

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


def rows_of(stack: Stack, rec: EmulatedRecording) -> list[Recording]:
    return [row for row in stack.rows() if row.recording_key == rec.id]


def state(stack: Stack, account: str = "default") -> PollState | None:
    return poll_state(stack.sessions, "telnyx", account)


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
        assert row.state == "stored" and row.source == "backfill"
        assert row.sha256 == stack.stored_bytes_sha256(audio_key(rec))
    after = state(stack)
    if mark is not None and mark.watermark is not None:  # backfill never moves it back
        assert after is not None and after.watermark is not None
        assert after.watermark >= mark.watermark
    again = backfill(stack, "--since", since, "--until", until, "--dry-run")
    assert "done: 1 pages, 3 recordings listed, 0 missing" in again.stdout
