"""The errors providers raise; their type decides the HTTP status or the retry.

::

    CallrecError
    ├── WebhookRejected            a webhook we refuse; .status is the HTTP status
    │   ├── SignatureInvalid       401: missing/bad signature, stale or future timestamp
    │   ├── PayloadInvalid         400: not JSON/form, or not a shape we know
    │   ├── UnsupportedMediaType   415: a content type the provider never sends
    │   └── WebhooksNotOffered     404: the provider sends no webhooks (it is polled)
    ├── ConfigurationMissing       a secret or key the operation needs is not configured
    └── CaptureError               fetching a recording failed
        ├── RetryLater             transient (429, 5xx, network, cut stream); .retry_after
        │   ├── NotReadyYet        the provider has not finished the recording yet
        │   └── RateLimited        the provider's API answered 429: the account pauses
        ├── NothingToCapture       a call-level lookup that is final with no recording
        ├── UrlExpired             the audio URL was refused (403/404/410): get a fresh one
        └── PermanentFailure       retrying cannot help (404 recording, 401 API key, SSRF...)
            └── CredentialsRefused 401/403 from the API; .status (a token may be renewed once)

Library errors (httpx, botocore) are translated to these at the boundary.
"""

from __future__ import annotations

__all__ = [
    "CallrecError",
    "CaptureError",
    "ConfigurationMissing",
    "CredentialsRefused",
    "NotReadyYet",
    "NothingToCapture",
    "PayloadInvalid",
    "PermanentFailure",
    "RateLimited",
    "RetryLater",
    "SignatureInvalid",
    "UnsupportedMediaType",
    "UrlExpired",
    "WebhookRejected",
    "WebhooksNotOffered",
]


class CallrecError(Exception):
    """Base of every error callrec raises on purpose."""


class WebhookRejected(CallrecError):
    """A webhook request we refuse; ``reason`` is short and safe to return to the sender."""

    status = 400
    #: The bounded reason metrics count it under (``config.metrics.WEBHOOK_REJECT_REASONS``).
    code = "payload"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignatureInvalid(WebhookRejected):
    status = 401
    code = "signature"


class PayloadInvalid(WebhookRejected):
    status = 400


class UnsupportedMediaType(WebhookRejected):
    status = 415
    code = "media_type"


class WebhooksNotOffered(WebhookRejected):
    """A provider that never sends webhooks (captured by polling its list API).

    404, not 401/400/503: there is no such webhook to verify or parse, and a 503 would invite
    retries; nothing is written to the ledger.
    """

    status = 404
    code = "not_offered"


class ConfigurationMissing(CallrecError):
    """A key or secret the operation needs is not set; the message names the setting."""


class CaptureError(CallrecError):
    """Fetching one recording failed; ``reason`` is short, stable and free of secrets."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryLater(CaptureError):
    """Transient: try again after ``retry_after`` seconds (None: our own backoff decides)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class NotReadyYet(RetryLater):
    """The provider knows the recording but has not finished it."""


class RateLimited(RetryLater):
    """The provider's API refused the account's key for now (HTTP 429).

    With a ``retry_after`` the whole account is paused in the ledger until then, so every
    process's polls and captures for it wait (``ledger/account_state.py``).
    """


class NothingToCapture(CaptureError):
    """A lookup's call is known to have no recording: the lookup row ends ``resolved`` with none.

    Raised by ``Provider.resolve`` only when the provider says so for certain (a finished call
    listing no recording); an empty list that may still fill up is returned as ``[]`` instead.
    """


class UrlExpired(CaptureError):
    """The audio URL was refused or expired: ask the provider's API for a fresh one."""


class PermanentFailure(CaptureError):
    """Retrying cannot help; the ledger row ends ``failed`` with this reason.

    ``code`` is the bounded kind of failure (``config.metrics.CAPTURE_FAILURE_REASONS``) that
    metrics and Sentry group by; the raise site knows it, so nobody parses ``reason``.
    """

    def __init__(self, reason: str, code: str = "permanent") -> None:
        super().__init__(reason)
        self.code = code


class CredentialsRefused(PermanentFailure):
    """The API answered 401 or 403 (``status``). Permanent for a fixed key; a provider whose
    access token expires (VOXO) renews the token and retries once on 401."""

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason, "credentials")
        self.status = status
