"""Webhook text the ledger cannot store is a 400, not a failed write (a 503 retried forever)."""

from __future__ import annotations

import pytest

from providers.errors import PayloadInvalid
from providers.json_body import parse_json_body
from providers.recording_callback import decode_form


@pytest.mark.parametrize(
    "body",
    [
        b'{"data":{"id":"a\\u0000b"}}',
        b'{"data":{"id":"\\udcff"}}',
        b'{"data":{"\\u0000":1}}',
        b'{"x":[[["\\ud800"]]]}',
    ],
)
def test_json_with_nul_or_lone_surrogate_is_refused(body: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        parse_json_body(body)


def test_json_surrogate_pairs_are_text() -> None:
    assert parse_json_body(b'{"id":"\\ud83d\\udcde"}') == {"id": "\U0001f4de"}


@pytest.mark.parametrize("body", [b"RecordingSid=a%00b", b"a%00=1", b"RecordingSid=%ed%b3%bf"])
def test_form_with_nul_or_surrogate_is_refused(body: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        decode_form(body)
