"""Decode an untrusted JSON webhook body: every way it can be bad becomes ``PayloadInvalid``."""

from __future__ import annotations

import json
import re
from typing import Any

from providers.errors import PayloadInvalid

__all__ = ["parse_json_body", "refuse_unstorable_text"]

#: The only way a NUL or a lone surrogate gets into a decoded document: strict UTF-8 has no
#: surrogates, and ``json.loads`` refuses raw control characters in strings, so it must be a
#: ``\u0000`` or ``\uD800`` to ``\uDFFF`` escape. Matching more (an escaped backslash before
#: ``u0000``, a valid surrogate pair) only costs the full walk.
_MAYBE_UNSTORABLE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def parse_json_body(body: bytes) -> Any:
    """Strict UTF-8 JSON. Deep nesting (RecursionError) and huge ints (ValueError) are 400s, and
    so is any string the ledger cannot store (``refuse_unstorable_text``). The walk over every
    string runs only when the text holds an escape that could make one: most bodies hold none,
    and the walk was the largest single item in the webhook view's CPU profile."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadInvalid("body is not UTF-8") from None
    try:
        document = json.loads(text)
    except RecursionError:
        raise PayloadInvalid("body is nested too deeply") from None
    except ValueError:
        raise PayloadInvalid("body is not valid JSON") from None
    if _MAYBE_UNSTORABLE.search(text):
        _refuse_unstorable_strings(document)
    return document


def refuse_unstorable_text(value: str) -> None:
    """``PayloadInvalid`` for text no ledger can hold: NUL (PostgreSQL text and jsonb refuse
    it) or a lone surrogate from a ``\\ud800`` escape (not encodable as UTF-8: the SQLite driver
    raises). Either would fail the ledger write: a 503 the provider retries forever."""
    if "\x00" in value:
        raise PayloadInvalid("body holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadInvalid("body holds a lone surrogate escape") from None


def _refuse_unstorable_strings(document: Any) -> None:
    pending = [document]
    while pending:  # iterative: the document may be nested up to the parser's limit
        value = pending.pop()
        if isinstance(value, str):
            refuse_unstorable_text(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                refuse_unstorable_text(key)
                pending.append(item)
        elif isinstance(value, list):
            pending.extend(value)
