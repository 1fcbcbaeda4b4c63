"""The receiver benchmark's baseline routes: verify the provider's signature the way callrec's
``POST /webhooks/<provider>`` does (same settings, provider objects and ``verify``), then
whatever the baseline adds (``bench/bare_app.py``: nothing; ``bench/floor_app.py``: a commit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request

from config.settings import Settings
from ingest.webhooks import webhook_request
from providers.base import Provider, WebhookRequest
from providers.errors import WebhookRejected
from providers.http import new_http_client
from providers.registry import Accounts

__all__ = ["AfterVerify", "verifying_app"]

#: What a baseline route does once the signature is verified: (route's provider name,
#: provider, request). It may raise ``WebhookRejected``, answered as callrec would.
AfterVerify = Callable[[str, Provider, WebhookRequest], None]


def verifying_app(
    flask_name: str, settings: Settings, after_verify: AfterVerify | None = None
) -> Flask:
    """A Flask app with ``POST /webhooks/<provider>`` (verify, then ``after_verify``) and
    ``GET /healthz``."""
    accounts = Accounts(settings, new_http_client(settings.http_timeout_seconds))
    baseline = Flask(flask_name)
    baseline.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    base = settings.public_base_url

    @baseline.post("/webhooks/<name>")
    def receive(name: str) -> Any:
        provider = accounts.provider(name)
        webhook = webhook_request(request.get_data(cache=False), base)
        try:
            provider.verify(webhook)
            if after_verify is not None:
                after_verify(name, provider, webhook)
        except WebhookRejected as exc:
            return jsonify(error=exc.reason), exc.status
        return jsonify(status="accepted"), 200

    @baseline.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return baseline
