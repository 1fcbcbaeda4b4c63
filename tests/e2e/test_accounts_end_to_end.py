"""Two accounts of one provider from the accounts file, one with broken credentials, on the
embedded stack with real worker, relay and beat processes: the good account polls and captures,
the broken one's failure is recorded with its reason and stops nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from ledger import Recording
from ledger.account_state import PollState, poll_state
from storage import recording_key
from tests.e2e.stack import start_stack
from tests.fixtures.callrec import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_two_accounts_one_with_broken_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2E_GOOD_TELNYX_KEY", "test-telnyx-key")  # the emulator's key
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        "[[accounts]]\nprovider = 'telnyx'\nname = 'good'\n"
        "credentials = { api_key_env = 'E2E_GOOD_TELNYX_KEY' }\n"
        "[[accounts]]\nprovider = 'telnyx'\nname = 'broken'\n"
        "credentials = { api_key = 'wrong-key' }\n"
    )
    # api_base and audio_hosts default to the CALLREC_TELNYX_* settings: the emulator.
    stack = start_stack(
        tmp_path,
        beat=True,
        CALLREC_ACCOUNTS_FILE=str(accounts),
        CALLREC_POLL_INTERVAL_SECONDS="10",
    )
    try:
        rec = stack.emulator.add_recording(
            size=30_000, started_at=datetime.now(UTC) - timedelta(minutes=2)
        )

        def stored_for_good() -> Recording | None:
            return next(
                (r for r in stack.rows() if r.account == "good" and r.state == "stored"), None
            )

        row = wait_for(stored_for_good, 60, 0.3, "the good account's recording")
        assert row.recording_key == rec.id and row.source == "poll"
        assert row.storage_key == recording_key("telnyx", "good", rec.id, "mp3")
        assert stack.metadata(row.storage_key)["account"] == "good"

        def broken_failed() -> PollState | None:
            found = poll_state(stack.sessions, "telnyx", "broken")
            return found if found is not None and found.last_error else None

        broken = wait_for(broken_failed, 45, 0.3, "the broken account's poll")
        assert broken.last_error == "API refused the credentials (HTTP 401 401 Unauthorized)"
        assert broken.watermark is None and broken.last_failure_at is not None
        good = poll_state(stack.sessions, "telnyx", "good")
        assert good is not None and good.watermark is not None and good.last_error is None
        with stack.sessions() as session:
            seen = set(session.execute(select(Recording.account)).scalars())
        assert "broken" not in seen and "good" in seen
    finally:
        stack.close()
