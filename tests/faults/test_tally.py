"""The fault suite's counting (``tests.faults.tally``) on a seeded ledger and storage: it must
see each kind of outcome, or a green fault test would prove nothing."""

from __future__ import annotations

import hashlib

from storage import recording_key
from tests.faults.tally import tally
from tests.fixtures.seeded import Seeded


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_tally_counts_every_outcome(seeded: Seeded) -> None:
    seeded.stored("good", data=b"good bytes")
    seeded.stored("wrong", data=b"not what was sent")
    seeded.failed("gone", "HTTP 404 from the provider")
    seeded.failed("flaky", "HTTP 503 after 8 attempts")
    seeded.accept("stuck")
    # The same bytes under a second key: one recording stored twice.
    seeded.storage.write(
        recording_key("telnyx", "other", "good", "mp3"), [b"good bytes"], content_type="audio/mpeg"
    )
    sent = {
        "good": _sha(b"good bytes"),
        "wrong": _sha(b"what the emulator served"),
        "gone": None,
        "flaky": _sha(b"available"),
        "stuck": _sha(b"stuck bytes"),
        "never": _sha(b"never announced"),
    }
    result = tally(seeded.sessions, seeded.storage, sent)
    assert (result.sent, result.stored, result.failed_with_reason) == (6, 2, 2)
    assert result.duplicates == 1
    assert result.hash_mismatches == 1
    assert result.unexpected_failures == 1
    assert result.lost == 2  # "stuck" never left accepted, "never" has no row
    assert any(problem.startswith("extra") for problem in result.verify_problems)
    assert not result.clean
    assert "lost=2" in result.line()


def test_tally_of_a_clean_run(seeded: Seeded) -> None:
    seeded.stored("a", data=b"aaa")
    seeded.failed("b", "HTTP 404 from the provider")
    result = tally(seeded.sessions, seeded.storage, {"a": _sha(b"aaa"), "b": None})
    result.assert_clean()
    assert (result.stored, result.failed_with_reason, result.lost) == (1, 1, 0)
