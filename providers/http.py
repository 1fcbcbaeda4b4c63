"""Provider API calls over httpx, with HTTP statuses translated into the capture error tree.

=========================  ==========================================================
response                    raised
=========================  ==========================================================
2xx with a JSON body        (returned)
401, 403                    CredentialsRefused("API refused the credentials ...")
404, 410                    PermanentFailure("... not found")
408, 409, 425               RetryLater, with the provider's Retry-After / reset hint
429                         RateLimited (a RetryLater), with that hint
5xx, network errors         RetryLater
other 4xx                   PermanentFailure
=========================  ==========================================================
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import httpx

from config.metrics import metrics
from providers.errors import CredentialsRefused, PermanentFailure, RateLimited, RetryLater

__all__ = ["ApiClient", "new_http_client", "retry_after_seconds", "retry_briefly"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


def new_http_client(timeout: float) -> httpx.Client:
    """The process-wide client: pooled connections, no automatic redirects, bounded timeouts."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        headers={"user-agent": "callrec/0.1"},
    )


def retry_after_seconds(
    headers: Mapping[str, str], now: float | None = None, *, rate_limited: bool = True
) -> float | None:
    """The wait a 429/503 asks for: ``retry-after-ms``, ``Retry-After`` or ``x-ratelimit-reset``.

    ``Retry-After`` may be seconds or an HTTP date. Telnyx documents ``x-ratelimit-reset`` "in
    seconds" without saying whether it is a delay or an epoch time: a value above 10^9 is taken
    as an epoch time, anything smaller as a delay. It is a wait only for a request refused for
    its rate (``rate_limited``, a 429): Telnyx sends it on every response, and taken from a 5xx
    it would replace the jittered backoff with the window's reset, sending every row that failed
    in one window back at the same moment.
    """
    now = time.time() if now is None else now
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw:
        try:
            return max(0.0, float(raw))
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                parsed = None
            if parsed is not None:
                return max(0.0, parsed.timestamp() - now)
    reset = headers.get("x-ratelimit-reset") if rate_limited else None
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        return max(0.0, value - now) if value > 1e9 else max(0.0, value)
    return None


class ApiClient:
    """JSON GET/POST against one account's API base with its auth headers."""

    def __init__(
        self,
        http: httpx.Client,
        base_url: str,
        headers: Mapping[str, str],
        describe_error: Callable[[httpx.Response], str],
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._headers = dict(headers)
        self._describe = describe_error

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request_json("GET", path, params=params)

    def request_json(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
    ) -> Any:
        url = self._base + path
        try:
            response = self._http.request(
                method, url, params=params, json=json_body, headers=self._headers
            )
        except httpx.TimeoutException as exc:
            raise RetryLater(f"API timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise RetryLater(f"API unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RetryLater(
                    f"API answered HTTP {status} with a body that is not JSON"
                ) from None
        reason = self._describe(response)
        if status == 429:
            raise RateLimited(f"API {reason}", retry_after_seconds(response.headers))
        if status in RETRYABLE_STATUSES or status >= 500:
            raise RetryLater(
                f"API {reason}", retry_after_seconds(response.headers, rate_limited=False)
            )
        if status in (401, 403):
            raise CredentialsRefused(f"API refused the credentials ({reason})", status)
        if status in (404, 410):
            raise PermanentFailure(f"not found at the provider ({reason})", "not_found")
        raise PermanentFailure(f"API {reason}")


def retry_briefly(
    call: Callable[[], T],
    what: str,
    *,
    attempts: int,
    base_wait: float,
    max_wait: float,
    sleep: Callable[[float], None] = time.sleep,
    account: tuple[str, str] | None = None,
) -> T:
    """``call()``, retried on ``RetryLater`` up to ``attempts`` times in all, so one failed page
    does not restart a whole listing.

    Each wait is the error's ``retry_after`` (the provider's ``Retry-After``), else
    ``base_wait`` doubled per attempt. A wait longer than ``max_wait``, or the last attempt's
    failure, is raised: the caller's own path (an account pause, the next poll) waits it out.
    ``what`` names the request in the log line; it must hold no secret or phone number.
    A 429 waited out here is counted for ``account`` (provider, account name) as a poll's;
    one raised is counted by whoever waits it out (``workers/ratelimits.py``).
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except RetryLater as exc:
            wait = exc.retry_after
            if wait is None:
                wait = base_wait * 2 ** (attempt - 1)
            if attempt == attempts or wait > max_wait:
                raise
            logger.info("%s failed (%s), retrying in %.1fs", what, exc.reason, wait)
            if account is not None and isinstance(exc, RateLimited):
                metrics().rate_limited.labels(*account, "poll").inc()
            sleep(wait)
    raise ValueError("attempts must be >= 1")
