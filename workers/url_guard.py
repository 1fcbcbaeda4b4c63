"""Where audio may be fetched from: the provider's allowed hosts, never internal addresses.

``CALLREC_<PROVIDER>_AUDIO_HOSTS`` entries are ``host`` (any port), ``host:port`` (that port
only) or ``*.suffix`` (any subdomain, https on port 443 only). Plain http is accepted only for
hosts listed exactly (the loopback emulators in tests). A host that resolves to a private,
loopback, link-local, CGNAT, multicast or unspecified address is refused unless listed exactly,
which also catches ``2130706433``, ``0x7f.1`` and friends. Every redirect hop is checked again.

A host name is resolved once, here, and the connection goes to the address that was vetted
(``VettedUrl.request``: the URL names the address, while the ``Host`` header and TLS (SNI and
certificate check) still name the host), so a DNS-rebinding resolver that answers a public
address to the check and a private one to the connect is never asked twice.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from providers.errors import PermanentFailure, RetryLater

__all__ = ["Resolver", "VettedUrl", "check_audio_url"]

DEFAULT_PORTS = {"http": 80, "https": 443}
WILDCARD_PORT = 443
REFUSED = "refused_host"  # the failure code of every refusal here

#: ``socket.getaddrinfo``-compatible resolver (tests hand in their own; no DNS in CI).
Resolver = Callable[..., list[tuple[Any, ...]]]


def _match(host: str, port: int, allowed: tuple[str, ...]) -> str | None:
    """'exact', 'wildcard' or None for ``host:port`` against the allow-list."""
    for entry in allowed:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:] and port == WILDCARD_PORT:
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


@dataclass(frozen=True)
class VettedUrl:
    """An audio URL the guard let through, and the address its connection must go to.

    ``address`` is None when the URL's host is an IP address already (nothing to resolve).
    """

    url: httpx.URL
    address: str | None = None

    def request(self, http: httpx.Client, headers: Mapping[str, str]) -> httpx.Request:
        """A GET of ``url`` whose connection goes to ``address``, not to a fresh lookup."""
        if self.address is None:
            return http.build_request("GET", self.url, headers=headers)
        return http.build_request(
            "GET",
            self.url.copy_with(host=self.address),
            headers={**headers, "host": self.url.netloc.decode("ascii")},
            extensions={"sni_hostname": self.url.host},
        )


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_audio_url(
    url: str, allowed: tuple[str, ...], resolve: Resolver = socket.getaddrinfo
) -> VettedUrl:
    """The URL and the address to connect to if it may be fetched; ``PermanentFailure``
    naming the rule otherwise (``RetryLater`` when its host does not resolve)."""
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
    if matched == "wildcard" and scheme != "https":
        raise PermanentFailure(f"plain http refused for {host} (not listed exactly)", REFUSED)
    if _ip_literal(host):
        if matched == "wildcard" and _is_internal(host):
            raise PermanentFailure(f"audio host {host} is an internal address", REFUSED)
        return VettedUrl(parsed)
    try:
        infos = resolve(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise RetryLater(f"audio host {host} does not resolve") from None
    addresses = [str(info[4][0]).split("%", 1)[0] for info in infos]
    if not addresses:
        raise RetryLater(f"audio host {host} does not resolve")
    if matched == "wildcard" and any(_is_internal(address) for address in addresses):
        raise PermanentFailure(f"audio host {host} resolves to an internal address", REFUSED)
    return VettedUrl(parsed, addresses[0])
