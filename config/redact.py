"""Scrub secrets, signed-URL query strings and phone numbers out of text bound for logs/Sentry."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["QUERY_KEYS", "redact", "redact_value"]

# A URL's query string carries presigned-URL signatures (X-Amz-Signature, tokens): drop it.
_URL_QUERY = re.compile(r"(https?://[^\s?#\"'<>]+)\?[^\s\"'<>]*")
# E.164 and bare national numbers: 10 to 15 digits, optionally with a leading +.
_PHONE = re.compile(r"(?<![\w.-])\+?\d{10,15}(?![\w.-])")
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
#: Keys whose value is a query string or fragment without its URL, which ``_URL_QUERY`` cannot
#: see: sentry-sdk's HTTP breadcrumbs and spans (``http.query``: a presigned URL's signature),
#: the request of a Flask event (``query_string``).
QUERY_KEYS = frozenset({"http.query", "http.fragment", "query_string"})


def redact(text: str) -> str:
    """Return ``text`` with URL query strings, bearer tokens and phone numbers masked."""
    text = _URL_QUERY.sub(r"\1?[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return _PHONE.sub("[phone]", text)


def redact_value(value: Any) -> Any:
    """Redact strings inside nested dicts/lists (for Sentry events); a non-empty value under a
    key of ``QUERY_KEYS`` becomes ``[redacted]``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            key: "[redacted]" if key in QUERY_KEYS and item else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value
