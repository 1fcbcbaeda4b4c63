"""Signature helpers shared by providers: timestamp windows, base64, Ed25519, HMAC-SHA256, and
Twilio's HMAC-SHA1.

All fail closed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

from providers.errors import ConfigurationMissing, SignatureInvalid

__all__ = [
    "check_timestamp",
    "check_timestamp_s_or_ms",
    "decode_b64",
    "load_b64_key",
    "load_ed25519_key",
    "twilio_signature",
    "twilio_url_variants",
    "verify_ed25519",
    "verify_hmac_sha256",
    "verify_twilio_signature",
]

DEFAULT_TOLERANCE_SECONDS = 300
# One body for every signature failure, so a caller learns nothing about which check failed.
SIGNATURE_REASON = "signature verification failed"


def check_timestamp(raw: str | None, now: float, tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> int:
    """Parse a unix-seconds timestamp header and reject it outside ``now ± tolerance``.

    ASCII digits only: ``str.isdigit`` also takes '²' (latin-1, so any client can send it),
    which ``int`` refuses.
    """
    text = (raw or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise SignatureInvalid(SIGNATURE_REASON)
    value = int(text)
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


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """``X-Twilio-Signature``: base64 HMAC-SHA1 keyed with the auth token over the full URL,
    then every POST parameter as name+value, names sorted and, for a repeated name, its distinct
    values sorted (twilio-python ``RequestValidator.compute_signature``)."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    message = url + "".join(
        name + value for name in sorted(values) for value in sorted(values[name])
    )
    digest = hmac.new(token.encode(), message.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_url_variants(url: str) -> tuple[str, ...]:
    """The URL with its port (the scheme's default added when absent) and without any port.

    Twilio computes the signature with or without the port depending on the product ("sig
    generation on back end is inconsistent", twilio-python ``RequestValidator.validate``). The
    host is kept as written (not lower-cased): it is part of the signed text.
    """
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: nothing can match
        raise SignatureInvalid(SIGNATURE_REASON) from None
    if port:
        bare = parts.netloc[: parts.netloc.rindex(":")]
        return (urlunsplit(parts), urlunsplit(parts._replace(netloc=bare)))
    default = 443 if parts.scheme == "https" else 80
    return (urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}")), urlunsplit(parts))


def verify_twilio_signature(
    token: str, url: str, params: Iterable[tuple[str, str]], signature: str | None
) -> None:
    """Accept ``signature`` for ``url`` with or without its port; constant-time compare."""
    if not signature:
        raise SignatureInvalid(SIGNATURE_REASON)
    pairs = list(params)
    given = signature.strip().encode()
    matched = False
    for candidate in twilio_url_variants(url):
        expected = twilio_signature(token, candidate, pairs).encode()
        matched |= hmac.compare_digest(expected, given)  # no early exit: same work either way
    if not matched:
        raise SignatureInvalid(SIGNATURE_REASON)
