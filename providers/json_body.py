"""Decode an untrusted JSON webhook body: every way it can be bad becomes ``PayloadInvalid``."""

from __future__ import annotations

import json
from typing import Any

from providers.errors import PayloadInvalid

__all__ = ["parse_json_body", "refuse_unstorable_text"]


def parse_json_body(body: bytes) -> Any:
    """Strict UTF-8 JSON. Deep nesting (RecursionError) and huge ints (ValueError) are 400s, and
    so is any string the ledger cannot store (``refuse_unstorable_text``)."""
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
