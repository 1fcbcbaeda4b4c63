"""Webhook text the ledger cannot store is a 400, not a failed write (a 503 retried forever)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.errors import PayloadInvalid
from providers.json_body import _refuse_unstorable_strings, parse_json_body
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


@pytest.mark.parametrize(
    "body",
    [b'{"id":"\\uDBFF"}', b'{"a":[{"b":["x","\\u0000"]}]}', b'{"\\uDFFF":1}'],
)
def test_upper_case_and_nested_escapes_are_refused(body: bytes) -> None:
    with pytest.raises(PayloadInvalid):
        parse_json_body(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"id":"\\\\u0000"}', {"id": "\\u0000"}),  # an escaped backslash: text, not a NUL
        (b'{"name":"Ren\\u00e9e"}', {"name": "Ren\u00e9e"}),
    ],
)
def test_escapes_that_make_storable_text_are_accepted(body: bytes, expected: object) -> None:
    assert parse_json_body(body) == expected


def test_every_lone_surrogate_escape_is_refused_in_either_case() -> None:
    for code_point in range(0xD800, 0xE000):
        for escape in (f"\\u{code_point:04x}", f"\\u{code_point:04X}"):
            with pytest.raises(PayloadInvalid):
                parse_json_body(f'{{"a":[{{"{escape}":1}}]}}'.encode())
            with pytest.raises(PayloadInvalid):
                parse_json_body(f'{{"a":["x{escape}"]}}'.encode())


def test_raw_control_characters_are_invalid_json() -> None:
    with pytest.raises(PayloadInvalid, match="not valid JSON"):
        parse_json_body(b'{"id":"a\x00b"}')


#: Any text, with NUL and the edges of both surrogate halves drawn often (hypothesis leaves
#: surrogates out by default, and rarely picks any one code point).
_ANY_TEXT = st.text(
    st.sampled_from("\x00\ud800\udbff\udc00\udfff\u00e9") | st.characters(exclude_categories=[])
)


@settings(max_examples=500, deadline=None)
@given(st.recursive(_ANY_TEXT, lambda inner: st.lists(inner) | st.dictionaries(_ANY_TEXT, inner)))
def test_refused_exactly_when_some_string_is_unstorable(document: object) -> None:
    """The escape pre-check never lets through what the full walk refuses (ASCII-escaped
    JSON, so every NUL and surrogate arrives as a ``\\u`` escape, as a sender would write it)."""
    body = json.dumps(document, ensure_ascii=True).encode()
    try:
        _refuse_unstorable_strings(document)
    except PayloadInvalid:
        with pytest.raises(PayloadInvalid):
            parse_json_body(body)
    else:
        assert parse_json_body(body) == document
