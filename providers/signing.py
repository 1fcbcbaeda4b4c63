"""Signature helpers shared by providers: timestamp windows, base64, Ed25519, HMAC-SHA256.

All fail closed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from providers.errors import ConfigurationMissing, SignatureInvalid

__all__ = [
    "check_timestamp",
    "check_timestamp_s_or_ms",
    "decode_b64",
    "load_b64_key",
    "load_ed25519_key",
    "verify_ed25519",
    "verify_hmac_sha256",
]

DEFAULT_TOLERANCE_SECONDS = 300
# One body for every signature failure, so a caller learns nothing about which check failed.
SIGNATURE_REASON = "signature verification failed"


def check_timestamp(raw: str | None, now: float, tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> int:
    """Parse a unix-seconds timestamp header and reject it outside ``now ± tolerance``."""
    if not raw or not raw.strip().isdigit() or len(raw.strip()) > 12:
        raise SignatureInvalid(SIGNATURE_REASON)
    value = int(raw.strip())
    if abs(now - value) > tolerance:
        raise SignatureInvalid(SIGNATURE_REASON)
    return value


def check_timestamp_s_or_ms(
    raw: str | None, now: float, tolerance: int = DEFAULT_TOLERANCE_SECONDS
) -> float:
    """A unix timestamp of 13 digits (ms) or 10 digits (s), within ``now ± tolerance``.

    Returns seconds. Any other length is refused rather than guessed at.
    """
    text = (raw or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) not in (10, 13):
        raise SignatureInvalid(SIGNATURE_REASON)
    value = int(text) / (1000 if len(text) == 13 else 1)
    if abs(now - value) > tolerance:
        raise SignatureInvalid(SIGNATURE_REASON)
    return value


def decode_b64(raw: str | None, *, expected_len: int | None = None) -> bytes:
    """Strict base64 decode; ``SignatureInvalid`` for anything else."""
    if not raw:
        raise SignatureInvalid(SIGNATURE_REASON)
    try:
        value = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid(SIGNATURE_REASON) from None
    if expected_len is not None and len(value) != expected_len:
        raise SignatureInvalid(SIGNATURE_REASON)
    return value


def load_b64_key(key_b64: str, setting: str) -> bytes:
    """A shared secret given as base64; malformed or empty is a configuration error."""
    try:
        raw = base64.b64decode(key_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationMissing(f"{setting} is not valid base64") from None
    if not raw:
        raise ConfigurationMissing(f"{setting} decodes to an empty key")
    return raw


def load_ed25519_key(public_key_b64: str, setting: str) -> object:
    """A PyNaCl VerifyKey from a base64 32-byte key; a bad key is a configuration error."""
    try:
        from nacl.signing import VerifyKey
    except ImportError as exc:  # fail closed: never accept when we cannot verify
        raise ConfigurationMissing("PyNaCl is required to verify Ed25519 signatures") from exc
    try:
        raw = base64.b64decode(public_key_b64.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationMissing(f"{setting} is not valid base64") from None
    if len(raw) != 32:
        raise ConfigurationMissing(f"{setting} must decode to 32 bytes, got {len(raw)}")
    return VerifyKey(raw)


def verify_ed25519(verify_key: object, message: bytes, signature: bytes) -> None:
    from nacl.exceptions import BadSignatureError

    try:
        verify_key.verify(message, signature)  # type: ignore[attr-defined]
    except (BadSignatureError, ValueError, TypeError):
        raise SignatureInvalid(SIGNATURE_REASON) from None


def verify_hmac_sha256(key: bytes, message: bytes, signature: bytes) -> None:
    """``SignatureInvalid`` unless ``signature`` is HMAC-SHA256(key, message); constant time."""
    expected = hmac.new(key, message, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureInvalid(SIGNATURE_REASON)
