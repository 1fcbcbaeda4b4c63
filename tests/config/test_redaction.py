"""Signed URLs, bearer tokens and phone numbers never reach a log line."""

from __future__ import annotations

import io
import json
import logging

from config.logging import JsonFormatter, RedactingFilter, log_context
from config.redact import redact, redact_value

SIGNED = "https://s3.amazonaws.com/b/rec.mp3?X-Amz-Expires=600&X-Amz-Signature=abc123"


def test_redact_masks_query_strings_tokens_and_numbers() -> None:
    text = redact(f"GET {SIGNED} auth=Bearer sk_live_123 from +15551230000 to 5557650000")
    assert "X-Amz-Signature" not in text and "abc123" not in text
    assert "sk_live_123" not in text
    assert "15551230000" not in text and "5557650000" not in text
    assert "https://s3.amazonaws.com/b/rec.mp3?[redacted]" in text


def test_ids_and_sizes_survive() -> None:
    text = "recording 10cd86ac-5a0e-4a1e-9d38-0a7b1b7c8f21 stored 300000 bytes in 1.5s"
    assert redact(text) == text


def test_nested_values_for_sentry() -> None:
    event = {"extra": {"urls": [SIGNED], "to": "+15557650000"}, "n": 3}
    cleaned = redact_value(event)
    assert "abc123" not in json.dumps(cleaned) and "15557650000" not in json.dumps(cleaned)
    assert cleaned["n"] == 3


def test_bare_query_strings_of_sentry_breadcrumbs_and_requests() -> None:
    """sentry-sdk's HTTP breadcrumbs keep the query apart from the URL (R23 found the presigned
    signature there), as Flask events keep the request's query string."""
    crumb = {
        "type": "http",
        "data": {
            "url": "http://media.example/r.mp3",
            "http.query": "X-Amz-Expires=600&X-Amz-Signature=abc123",
            "http.fragment": "",
        },
    }
    event = {"request": {"url": "https://callrec/webhooks/quo", "query_string": "token=abc123"}}
    cleaned = redact_value([crumb, event])
    assert "abc123" not in json.dumps(cleaned)
    assert cleaned[0]["data"]["http.query"] == "[redacted]"
    assert cleaned[0]["data"]["http.fragment"] == ""  # empty stays empty
    assert cleaned[0]["data"]["url"] == "http://media.example/r.mp3"


def test_log_records_are_redacted_and_carry_context() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with log_context(recording=7, provider="telnyx"):
            logger.warning("download of %s for %s failed", SIGNED, "+15551230000")
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert "abc123" not in line["msg"] and "15551230000" not in line["msg"]
    assert (line["recording"], line["provider"], line["level"]) == (7, "telnyx", "warning")
