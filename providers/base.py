"""The provider interface: one small class per provider, used by ingest and by the workers.

The web view owns the HTTP flow (size, routing, status codes); the capture task owns claiming,
downloading, hashing and storing. A provider only fills these hooks:

* ingest side: ``verify`` (signature on the raw bytes) and ``parse`` (raw bytes → ``WebhookEvent``);
* worker side: ``fetch_recording`` (metadata + a *fresh* audio URL), ``resolve`` (a call-level
  lookup → its recordings) and ``list_recordings`` (for reconciliation).

A new provider is one module here, registered in ``providers.registry``, plus its emulator and
tests; the view, the ledger and the tasks never change for it.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import httpx

from providers.errors import ConfigurationMissing, PayloadInvalid, UnsupportedMediaType
from providers.http import ApiClient

__all__ = [
    "Account",
    "Download",
    "Provider",
    "RecordingRef",
    "WebhookEvent",
    "WebhookRequest",
]


#: Refs per batch when a provider's listing is not paged (``Provider.list_pages``).
LIST_BATCH = 100


@dataclass(frozen=True)
class Account:
    """One provider account: its credentials, API base and allowed audio hosts.

    ``sources`` maps each credential/option name to where it came from (an env var name), so
    a missing value is reported by the name the operator has to set. ``polled``: whether the
    reconciler lists this account; ``poll_interval_seconds``: its own interval (None: the
    ``CALLREC_POLL_INTERVAL_SECONDS`` default).
    """

    provider: str
    name: str
    api_base: str
    audio_hosts: tuple[str, ...]
    credentials: Mapping[str, str | None] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    polled: bool = True
    poll_interval_seconds: int | None = None

    def secret(self, name: str) -> str:
        value = self.credentials.get(name)
        if not value:
            where = self.sources.get(name, f"{self.provider}.{name}")
            raise ConfigurationMissing(f"{where} is not set")
        return value

    def __repr__(self) -> str:  # never print credentials
        return f"Account(provider={self.provider!r}, name={self.name!r})"


@dataclass(frozen=True)
class WebhookRequest:
    """The raw request as the provider sent it; signatures are checked on ``body`` exactly."""

    body: bytes
    headers: Mapping[str, str]  # case-insensitive (werkzeug Headers)
    content_type: str  # mimetype only, lower-case, no parameters
    url: str  # the public URL the provider called (Twilio signs it)
    received_at: float  # unix seconds


@dataclass(frozen=True)
class RecordingRef:
    """What a webhook or a list says about one recording: enough to create its ledger row.

    ``recording_id`` is the provider's id. When a webhook lacks it, ``lookup`` holds what the
    worker can search by (e.g. Telnyx ``call_session_id``) and the row is resolved later.
    ``hints`` are small JSON values the capture needs or the metadata record keeps (never
    signed URLs, never credentials).
    """

    recording_id: str | None
    lookup: tuple[tuple[str, str], ...] = ()
    call_id: str | None = None
    hints: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ledger_key(self) -> str:
        if self.recording_id:
            return self.recording_id
        return "lookup:" + "&".join(f"{key}={value}" for key, value in self.lookup)

    def __post_init__(self) -> None:
        if not self.recording_id and not self.lookup:
            raise ValueError("a RecordingRef needs a recording_id or a lookup")


@dataclass(frozen=True)
class WebhookEvent:
    """A verified, parsed webhook. No ``recordings`` means: acknowledge and ignore."""

    delivery_id: str
    event_type: str
    recordings: tuple[RecordingRef, ...] = ()


@dataclass(frozen=True)
class Download:
    """Where and how to fetch one recording's audio right now, and what to record about it.

    ``url`` is fresh and usually signed: it is a secret, never logged or stored.
    ``metadata`` feeds the metadata record (started_at, ended_at, duration_seconds, channels,
    call_id, segment, provider extras) and must not hold URLs or credentials.
    """

    url: str = field(repr=False)
    format: str
    content_type: str
    expected_size: int | None = None
    auth: tuple[str, str] | None = field(default=None, repr=False)
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """Base of every provider module. Subclasses set the class attributes and fill the hooks."""

    #: Route name and ledger/storage key component, e.g. ``"telnyx"``.
    name: ClassVar[str]
    #: The content types this provider sends webhooks with; anything else gets 415.
    webhook_content_types: ClassVar[frozenset[str]]
    #: A provider that sends no webhooks sets the reason every POST to its route (any account,
    #: known or not) is refused with: 404 ``WebhooksNotOffered``.
    webhooks_not_offered: ClassVar[str | None] = None
    #: Per-account settings read from the ``CALLREC_<NAME>_<FIELD>`` shorthand.
    credential_fields: ClassVar[tuple[str, ...]] = ()
    option_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, account: Account, http: httpx.Client) -> None:
        self.account = account
        self.http = http

    # -- ingest side ----------------------------------------------------------------------------
    @abc.abstractmethod
    def verify(self, request: WebhookRequest) -> None:
        """Raise ``SignatureInvalid`` unless the request is authentic and fresh; fail closed."""

    @abc.abstractmethod
    def parse(self, request: WebhookRequest) -> WebhookEvent:
        """Turn a verified request into an event; raise ``PayloadInvalid`` for unknown shapes."""

    def check_content_type(self, request: WebhookRequest) -> None:
        if request.content_type not in self.webhook_content_types:
            raise UnsupportedMediaType(f"content type {request.content_type or 'none'!r} refused")

    # -- worker side ----------------------------------------------------------------------------
    @abc.abstractmethod
    def fetch_recording(self, recording_id: str, hints: Mapping[str, Any]) -> Download:
        """Ask the API for the recording now: metadata and a fresh audio URL.

        Raises ``NotReadyYet``, ``RetryLater`` or ``PermanentFailure``.
        """

    @abc.abstractmethod
    def resolve(self, lookup: Mapping[str, str]) -> list[RecordingRef]:
        """The recordings a call-level lookup stands for (may be empty while not ready)."""

    def list_recordings(self, since: datetime, until: datetime) -> Iterator[RecordingRef]:
        """Every recording the provider lists for the window (reconciliation).

        A provider overrides this or :meth:`list_pages` (the other one follows). Without
        either it has no list API: ``NotImplementedError``, and the reconciler skips the account
        with a log line.
        """
        if type(self).list_pages is Provider.list_pages:
            raise NotImplementedError(f"{self.name} offers no recordings list")
        for page in self.list_pages(since, until):
            yield from page

    def list_pages(self, since: datetime, until: datetime) -> Iterator[list[RecordingRef]]:
        """``list_recordings`` in pages, so the reconciler commits and reports page by page.

        Providers whose API pages override this with their real pages; the default cuts the
        flat listing into batches of ``LIST_BATCH``.
        """
        if type(self).list_recordings is Provider.list_recordings:
            raise NotImplementedError(f"{self.name} offers no recordings list")
        batch: list[RecordingRef] = []
        for ref in self.list_recordings(since, until):
            batch.append(ref)
            if len(batch) >= LIST_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    # -- helpers for subclasses -----------------------------------------------------------------
    def api(self, headers: Mapping[str, str]) -> ApiClient:
        return ApiClient(self.http, self.account.api_base, headers, self.describe_error)

    def describe_error(self, response: httpx.Response) -> str:
        """A short, secret-free reason from an API error body; providers refine it."""
        return f"HTTP {response.status_code}"


def require_mapping(value: Any, where: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else ``PayloadInvalid`` naming the path."""
    if not isinstance(value, Mapping):
        raise PayloadInvalid(f"{where} must be an object")
    return value


def optional_str(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise PayloadInvalid(f"{where} must be a string of at most 256 characters")
    return value
