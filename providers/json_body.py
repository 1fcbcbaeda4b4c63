"""Decode an untrusted JSON webhook body: every way it can be bad becomes ``PayloadInvalid``."""

from __future__ import annotations

import json
from typing import Any

from providers.errors import PayloadInvalid

__all__ = ["parse_json_body"]


def parse_json_body(body: bytes) -> Any:
    """Strict UTF-8 JSON. Deep nesting (RecursionError) and huge ints (ValueError) are 400s."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadInvalid("body is not UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise PayloadInvalid("body is nested too deeply") from None
    except ValueError:
        raise PayloadInvalid("body is not valid JSON") from None
