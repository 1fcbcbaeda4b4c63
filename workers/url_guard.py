"""Where audio may be fetched from: the provider's allowed hosts, never internal addresses.

``CALLREC_<PROVIDER>_AUDIO_HOSTS`` entries are ``host`` (any port), ``host:port`` (that port
only) or ``*.suffix`` (any subdomain, https only). Plain http is accepted only for hosts listed
exactly (the loopback emulators in tests). A host that resolves to a private, loopback,
link-local, CGNAT, multicast or unspecified address is refused unless listed exactly, which
also catches ``2130706433``, ``0x7f.1`` and friends. Every redirect hop is checked again.

Known gap (hostile-input issue): the address is checked at resolution time, and httpx resolves
again when it connects, so a DNS-rebinding resolver could still slip between the two.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import httpx

from providers.errors import PermanentFailure, RetryLater

__all__ = ["check_audio_url"]

DEFAULT_PORTS = {"http": 80, "https": 443}
REFUSED = "refused_host"  # the failure code of every refusal here

#: ``socket.getaddrinfo``-compatible resolver (tests hand in their own; no DNS in CI).
Resolver = Callable[..., list[tuple[Any, ...]]]


def _match(host: str, port: int, allowed: tuple[str, ...]) -> str | None:
    """'exact', 'wildcard' or None for ``host:port`` against the allow-list."""
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return "wildcard"
            continue
        entry_host, sep, entry_port = (
            entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        )
        if sep:
            if host == entry_host and str(port) == entry_port:
                return "exact"
        elif host == entry:
            return "exact"
    return None


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or (isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10"))
    )


def check_audio_url(
    url: str, allowed: tuple[str, ...], resolve: Resolver = socket.getaddrinfo
) -> httpx.URL:
    """The parsed URL if it may be fetched; ``PermanentFailure`` naming the rule otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise PermanentFailure("audio URL is not a valid URL", REFUSED) from None
    scheme, host = parsed.scheme, (parsed.host or "").lower().rstrip(".")
    if scheme not in DEFAULT_PORTS or not host:
        raise PermanentFailure(f"audio URL scheme {scheme!r} refused", REFUSED)
    if parsed.userinfo:
        raise PermanentFailure("audio URL with credentials refused", REFUSED)
    port = parsed.port or DEFAULT_PORTS[scheme]
    matched = _match(host, port, allowed)
    if matched is None:
        raise PermanentFailure(
            f"audio host {host}:{port} is not in the allowed audio hosts", REFUSED
        )
    if matched == "exact":
        return parsed
    if scheme != "https":
        raise PermanentFailure(f"plain http refused for {host} (not listed exactly)", REFUSED)
    try:
        infos = resolve(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror:
        raise RetryLater(f"audio host {host} does not resolve") from None
    if any(_is_internal(str(info[4][0])) for info in infos):
        raise PermanentFailure(f"audio host {host} resolves to an internal address", REFUSED)
    return parsed
