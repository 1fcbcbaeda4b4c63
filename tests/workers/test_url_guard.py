"""Audio may only come from the provider's allowed hosts, and never from internal addresses
unless a host is listed exactly (R21 of the reliability plan, the parts the spine owns)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from providers.errors import PermanentFailure, RetryLater
from workers.url_guard import check_audio_url

PUBLIC = {
    "bucket.s3.amazonaws.com": "52.216.1.1",
    "localhost.amazonaws.com": "127.0.0.1",
    "rebind.amazonaws.com": "10.1.2.3",
}


def resolver(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
    """Stands in for DNS (there is none here): the answers the guard has to judge."""
    if host not in PUBLIC:
        raise socket.gaierror(host)
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC[host], port))]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://bucket.s3.amazonaws.com/rec.mp3?X-Amz-Signature=x", ("*.amazonaws.com",)),
        ("http://127.0.0.1:8091/media/a.mp3", ("127.0.0.1:8091",)),
        ("http://127.0.0.1:8091/media/a.mp3", ("127.0.0.1",)),  # a bare host matches any port
        ("https://media.example.com/a.mp3", ("media.example.com",)),
    ],
)
def test_allowed(url: str, allowed: tuple[str, ...]) -> None:
    check_audio_url(url, allowed, resolver)


@pytest.mark.parametrize(
    ("url", "allowed", "reason"),
    [
        ("http://127.0.0.1:8092/a.mp3", ("127.0.0.1:8091",), "not in the allowed"),
        ("https://evil.com/a.mp3", ("*.amazonaws.com",), "not in the allowed"),
        ("https://amazonaws.com.evil.com/a", ("*.amazonaws.com",), "not in the allowed"),
        ("http://bucket.s3.amazonaws.com/a.mp3", ("*.amazonaws.com",), "plain http"),
        ("ftp://127.0.0.1/a.mp3", ("127.0.0.1",), "scheme"),
        ("https://user:pw@media.example.com/a", ("media.example.com",), "credentials"),
        ("https://localhost.amazonaws.com/a", ("*.amazonaws.com",), "internal address"),
        ("https://rebind.amazonaws.com/a", ("*.amazonaws.com",), "internal address"),
        ("not a url", ("*.example.com",), "scheme"),
    ],
)
def test_refused(url: str, allowed: tuple[str, ...], reason: str) -> None:
    with pytest.raises(PermanentFailure, match=reason):
        check_audio_url(url, allowed, resolver)


def test_unresolvable_host_is_retried_later() -> None:
    with pytest.raises(RetryLater):
        check_audio_url("https://nx.amazonaws.com/a", ("*.amazonaws.com",), resolver)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "169.254.169.254",
        "10.0.0.1",
        "[::1]",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - a URL host under test, not a bind address
    ],
)
def test_internal_addresses_refused_behind_a_wildcard(host: str) -> None:
    """A wildcard never admits an internal address, whatever spelling the URL uses."""
    with pytest.raises(PermanentFailure):
        check_audio_url(f"https://{host}/a.mp3", ("*.amazonaws.com", "*.0.0.1", "*.1"))
