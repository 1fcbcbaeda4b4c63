"""How a lookup row ends when its call lists no recording: Telnyx retries (its list may lag the
webhook), Quo after ``call.completed`` ends ``resolved`` at once (the call was not recorded)."""

from __future__ import annotations

from pathlib import Path

from emulators.quo import QuoEmulator
from emulators.telnyx import TelnyxEmulator
from ledger import State, accept_refs
from providers.base import RecordingRef
from tests.workers.test_capture import Sent, make_runtime
from workers.capture import capture
from workers.runtime import Runtime


def accept_lookup(runtime: Runtime, provider: str, **lookup: str) -> int:
    ref = RecordingRef(recording_id=None, lookup=tuple(lookup.items()))
    (row_id,) = accept_refs(runtime.sessions, provider, "default", [ref], source="test").new_ids
    return row_id


def test_telnyx_lookup_with_no_recording_yet_is_retried(
    tmp_path: Path, telnyx_emulator: TelnyxEmulator
) -> None:
    sent: Sent = []
    runtime = make_runtime(tmp_path, telnyx_emulator, sent)
    try:
        row_id = accept_lookup(runtime, "telnyx", call_session_id="s-none")
        outcome = capture(runtime, row_id)
        assert outcome.state == State.RETRYING
        assert outcome.detail == "the provider lists no recording for this call yet"
        assert [rid for rid, _ in sent] == [row_id]
    finally:
        runtime.close()


def test_quo_lookups_with_no_recording(tmp_path: Path, telnyx_emulator: TelnyxEmulator) -> None:
    sent: Sent = []
    with QuoEmulator(rate_limit=None) as quo:
        runtime = make_runtime(
            tmp_path,
            telnyx_emulator,
            sent,
            **quo.settings_env(),
        )
        try:
            call = quo.add_call(segments=0)
            done = accept_lookup(runtime, "quo", call_id=call.id, event="call.completed")
            outcome = capture(runtime, done)
            assert outcome.state == State.RESOLVED
            assert outcome.detail == "resolved into 0 recordings: the call ended without recordings"
            assert sent == []  # final: nothing scheduled
            promised = accept_lookup(
                runtime, "quo", call_id=call.id, event="call.recording.completed"
            )
            assert capture(runtime, promised).state == State.RETRYING
            quo.add_recording(call.id, size=100)
            (found,) = [rid for rid, _ in sent if rid == promised]
            later = capture(runtime, found)  # the retry finds the recording once it is listed
            assert later.state == State.RESOLVED and "into 1 recording(s)" in str(later.detail)
        finally:
            runtime.close()
