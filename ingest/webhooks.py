"""``POST /webhooks/<provider>[/<account>]``: the one view every provider shares.

Order of checks: body size (413, enforced while reading) → provider/account from the path →
signature on the raw bytes (401) → content type (415) → parse (400) → ledger (2xx, after the
commit; concurrent requests share it: ledger/group_commit.py). An unknown provider or account
gets exactly the 401 of a bad signature, after the same size check, so the answer never tells
whether an account exists; only a provider that sends no webhooks answers 404 on every path.
Unknown event types are acknowledged and ignored, so the provider stops retrying them.
What was committed is logged and counted once per shared transaction (:func:`record_committed`,
the committer's after-commit hook), not per request: the receiver's CPU budget is per webhook.
Nothing here touches the broker: the relay process publishes committed rows (workers/relay.py).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from config.logging import log_context, only_log_context
from config.metrics import UNKNOWN, metrics
from ledger.group_commit import Committed
from providers.base import Provider, WebhookRequest
from providers.errors import (
    ConfigurationMissing,
    SignatureInvalid,
    WebhookRejected,
    WebhooksNotOffered,
)
from providers.registry import DEFAULT_ACCOUNT, PROVIDERS, UnknownAccount
from providers.signing import SIGNATURE_REASON

__all__ = ["record_committed", "webhook_request", "webhooks"]

logger = logging.getLogger(__name__)

webhooks = Blueprint("webhooks", __name__)


def webhook_request(
    body: bytes, public_base_url: str | None, received_at: float | None = None
) -> WebhookRequest:
    """The current Flask request as providers see it: the raw ``body`` already read, and the
    URL the provider called (``public_base_url`` + path when set; Twilio signs it)."""
    url = (public_base_url + request.full_path.rstrip("?")) if public_base_url else request.url
    return WebhookRequest(
        body=body,
        headers=request.headers,  # type: ignore[arg-type]  # werkzeug Headers: a case-insensitive mapping
        content_type=(request.mimetype or "").lower(),
        url=url,
        received_at=time.time() if received_at is None else received_at,
    )


def _read_body(limit: int) -> bytes:
    """The raw body; ``RequestEntityTooLarge`` (413) past ``limit`` bytes, having read at most
    one byte more.

    werkzeug refuses a ``Content-Length`` over its maximum before reading, but a chunked body
    (no length) read to the end stops silently at the maximum: the first ``limit`` bytes came
    back as if they were the whole body (then a 401 for the cut signature, not a 413). So the
    maximum is one byte past the limit and the length is judged here.
    """
    request.max_content_length = limit + 1
    body = request.get_data(cache=False)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def _path_rejection(provider: str) -> WebhookRejected:
    """What a POST to a path naming no configured account gets: the rejection every account of
    a provider without webhooks gets, else the very one of a bad signature."""
    cls = PROVIDERS.get(provider)
    if cls is not None and cls.webhooks_not_offered:
        return WebhooksNotOffered(cls.webhooks_not_offered)
    return SignatureInvalid(SIGNATURE_REASON)


@webhooks.post("/webhooks/<provider>")
@webhooks.post("/webhooks/<provider>/<account>")
def receive(provider: str, account: str = DEFAULT_ACCOUNT) -> Any:
    from ingest.app import state

    current, counters = state(), metrics()
    handler: Provider | None
    try:
        handler = current.accounts.provider(provider, account)
    except UnknownAccount:  # the path is not a label value: it is the sender's choice
        handler, rejection = None, _path_rejection(provider)
        provider = account = UNKNOWN
    counters.webhooks_received.labels(provider, account).inc()
    with log_context(provider=provider, account=account):
        try:
            body = _read_body(current.settings.max_body_bytes)
        except RequestEntityTooLarge:
            counters.webhook_rejected(provider, account, "too_large")
            raise
        if handler is None:
            logger.info("webhook for an unknown provider or account rejected")
            counters.webhook_rejected(UNKNOWN, UNKNOWN, "unknown_account")
            return jsonify(error=rejection.reason), rejection.status
        webhook = webhook_request(body, current.settings.public_base_url, current.clock())
        try:
            handler.verify(webhook)
            handler.check_content_type(webhook)
            event = handler.parse(webhook)
        except WebhookRejected as exc:
            logger.info("webhook rejected (%s): %s", exc.status, exc.reason)
            counters.webhook_rejected(provider, account, exc.code)
            return jsonify(error=exc.reason), exc.status
        except ConfigurationMissing as exc:
            logger.error("webhook cannot be verified: %s", exc)
            counters.webhook_rejected(provider, account, "not_configured")
            return jsonify(error="webhook verification is not configured"), 503
        try:
            result = current.committer.accept(provider, account, event)
        except Exception as exc:
            # Not committed, so not accepted: a non-2xx makes the provider deliver it again.
            if not isinstance(exc, SQLAlchemyError):
                logger.exception("webhook not accepted: the ledger write crashed")
            logger.error("ledger unavailable, webhook not accepted (%s)", type(exc).__name__)
            counters.webhook_rejected(provider, account, "ledger_unavailable")
            return jsonify(error="ledger unavailable, retry later"), 503
        return jsonify(status=result.status, recordings=result.recording_ids), 200


def record_committed(committed: Sequence[Committed]) -> None:
    """Log and count the webhooks one ledger transaction committed: one line for all of them
    (``webhook <type>: <status> delivery=… recordings=[…]`` each, ``; ``-separated, with
    ``provider``/``account`` as context when the batch has one account, else in each part)."""
    accounts = {(provider, account) for provider, account, _, _ in committed}
    single = len(accounts) == 1
    parts = []
    recordings: list[int] = []
    by_result: Counter[tuple[str, str, str]] = Counter()
    for provider, account, event, result in committed:
        by_result[(provider, account, result.status)] += 1
        recordings += result.recording_ids
        where = "" if single else f"{provider}/{account} "
        parts.append(
            f"{where}webhook {event.event_type}: {result.status} delivery={event.delivery_id} "
            f"recordings={result.recording_ids}"
        )
    accepted = metrics().webhooks_accepted
    for labels, count in by_result.items():
        accepted.labels(*labels).inc(count)
    if not logger.isEnabledFor(logging.INFO):
        return
    context: dict[str, Any] = {}
    if single:
        context["provider"], context["account"] = next(iter(accounts))
    with only_log_context(**context, recordings=recordings):
        logger.info("%s", "; ".join(parts))
