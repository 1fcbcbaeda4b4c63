"""Object keys: deterministic, and safe to use as relative file paths or S3 keys.

A recording's key is ``{provider}/{account}/{fanout}/{safe_id}.{fmt}``. The same inputs always
give the same key (the exactly-once guarantee rests on the conditional create of that key), and
no recording id, however hostile, can produce a ``.``/``..`` segment, a slash, a NUL or a
non-ASCII byte in the key.
"""

from __future__ import annotations

import hashlib
import logging
import re

__all__ = ["check_key", "check_prefix", "metadata_key", "recording_key"]

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_FMT_RE = re.compile(r"[a-z0-9]{1,8}")
_SAFE_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_MAX_SAFE_ID = 200
_METADATA_EXT = "json"


def _id_bytes(recording_id: str) -> bytes:
    # surrogatepass: ids decoded leniently upstream must still map to distinct, stable keys.
    return recording_id.encode("utf-8", errors="surrogatepass")


def _safe_id(raw: bytes) -> str:
    encoded = "".join(chr(b) if b in _SAFE_BYTES else f"%{b:02X}" for b in raw)
    if len(encoded) > _MAX_SAFE_ID:
        return "h-" + hashlib.sha256(raw).hexdigest()
    return encoded


def recording_key(provider: str, account: str, recording_id: str, fmt: str) -> str:
    """The storage key of one recording's audio; raises ``ValueError`` on malformed parts.

    ``fanout`` (two hex chars of sha256 of the id) keeps disk directories small. The id is
    percent-encoded leaving only ``A-Za-z0-9_-`` (so ``..`` can never be a segment); an encoding
    longer than 200 chars is replaced by ``h-`` + sha256 hex. ``fmt`` may not be ``json``: that
    extension belongs to the metadata record beside the audio (see ``metadata_key``).
    """
    for label, value in (("provider", provider), ("account", account)):
        if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
            raise ValueError(f"invalid {label} for a storage key: {value!r}")
    if not isinstance(fmt, str) or not _FMT_RE.fullmatch(fmt):
        raise ValueError(f"invalid format for a storage key: {fmt!r}")
    if fmt == _METADATA_EXT:
        raise ValueError(f"format {fmt!r} is reserved for metadata records")
    if not isinstance(recording_id, str) or not recording_id:
        raise ValueError("recording id must be a non-empty string")
    raw = _id_bytes(recording_id)
    fanout = hashlib.sha256(raw).hexdigest()[:2]
    return f"{provider}/{account}/{fanout}/{_safe_id(raw)}.{fmt}"


def metadata_key(audio_key: str) -> str:
    """The key of the metadata record stored beside ``audio_key`` (extension becomes ``.json``)."""
    check_key(audio_key)
    head, sep, name = audio_key.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext or ext == _METADATA_EXT:
        raise ValueError(f"not an audio key with an extension: {audio_key!r}")
    return f"{head}{sep}{stem}.{_METADATA_EXT}"


def check_key(key: str) -> None:
    """Refuse keys no backend should accept: empty, absolute, NUL, empty/``.``/``..`` segments.

    Keys from ``recording_key`` always pass; this guards backends against other callers.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    if "\x00" in key:
        raise ValueError(f"storage key contains NUL: {key!r}")
    if key.startswith("/"):
        raise ValueError(f"storage key must be relative: {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"storage key has an empty, '.' or '..' segment: {key!r}")


def check_prefix(prefix: str) -> None:
    """A listing prefix: ``""`` or whole key segments followed by ``/``."""
    if prefix == "":
        return
    if not prefix.endswith("/"):
        raise ValueError(f"listing prefix must end with '/': {prefix!r}")
    check_key(prefix[:-1])
