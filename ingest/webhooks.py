"""``POST /webhooks/<provider>[/<account>]``: the one view every provider shares.

Order of checks: body size (413, enforced while reading) → provider/account from the path
(404) → signature on the raw bytes (401) → content type (415) → parse (400) → ledger (2xx,
after the commit; concurrent requests share it: ledger/group_commit.py).
Unknown event types are acknowledged and ignored, so the provider stops retrying them.
Nothing here touches the broker: the relay process publishes committed rows (workers/relay.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from config.logging import log_context
from config.metrics import UNKNOWN, metrics
from providers.base import WebhookRequest
from providers.errors import ConfigurationMissing, WebhookRejected
from providers.registry import DEFAULT_ACCOUNT, UnknownAccount

__all__ = ["webhook_request", "webhooks"]

logger = logging.getLogger(__name__)

webhooks = Blueprint("webhooks", __name__)


def webhook_request(body: bytes, public_base_url: str | None) -> WebhookRequest:
    """The current Flask request as providers see it: the raw ``body`` already read, and the
    URL the provider called (``public_base_url`` + path when set; Twilio signs it)."""
    url = (public_base_url + request.full_path.rstrip("?")) if public_base_url else request.url
    return WebhookRequest(
        body=body,
        headers=request.headers,  # type: ignore[arg-type]  # werkzeug Headers: a case-insensitive mapping
        content_type=(request.mimetype or "").lower(),
        url=url,
        received_at=time.time(),
    )


@webhooks.post("/webhooks/<provider>")
@webhooks.post("/webhooks/<provider>/<account>")
def receive(provider: str, account: str = DEFAULT_ACCOUNT) -> Any:
    from ingest.app import state

    current, counters = state(), metrics()
    try:
        handler = current.accounts.provider(provider, account)
    except UnknownAccount:  # the path is not a label value: it is the sender's choice
        counters.webhooks_received.labels(UNKNOWN, UNKNOWN).inc()
        counters.webhook_rejected(UNKNOWN, UNKNOWN, "unknown_account")
        return jsonify(error="unknown provider or account"), 404
    counters.webhooks_received.labels(provider, account).inc()
    with log_context(provider=provider, account=account):
        try:
            body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
        except RequestEntityTooLarge:
            counters.webhook_rejected(provider, account, "too_large")
            raise
        webhook = webhook_request(body, current.settings.public_base_url)
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
        counters.webhooks_accepted.labels(provider, account, result.status).inc()
        if result.status == "ignored":
            logger.debug("ignored event type %s", event.event_type)
        else:
            with log_context(recordings=result.recording_ids):
                logger.info(
                    "webhook %s: %s delivery=%s recordings=%s",
                    event.event_type,
                    result.status,
                    event.delivery_id,
                    result.recording_ids,
                )
        return jsonify(status=result.status, recordings=result.recording_ids), 200
