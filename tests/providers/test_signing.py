"""Timestamp headers: only ASCII digits are a timestamp (found by the hostile-input fuzzer)."""

from __future__ import annotations

import pytest

from providers.errors import SignatureInvalid
from providers.signing import check_timestamp, check_timestamp_s_or_ms

NOW = 1_795_000_000


@pytest.mark.parametrize(
    "raw", ["²", "1²", "١٧٩٥٠٠٠٠٠٠", "+1795000000", "1_795_000_000", "0x1", "", None, "1" * 13]
)
def test_non_ascii_or_non_decimal_timestamps_are_a_bad_signature_never_a_crash(
    raw: str | None,
) -> None:
    with pytest.raises(SignatureInvalid):
        check_timestamp(raw, NOW)
    with pytest.raises(SignatureInvalid):
        check_timestamp_s_or_ms(raw, NOW)


def test_ascii_timestamp_within_the_window_is_read() -> None:
    assert check_timestamp(f" {NOW - 300} ", NOW) == NOW - 300
