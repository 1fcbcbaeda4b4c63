"""The receiver benchmark's baseline: bare Flask routes that only verify the provider's signature.

Same settings (``CALLREC_*``), same provider objects and the same ``verify`` as callrec's
``POST /webhooks/<provider>``, then ``{"status": "accepted"}``: no parsing, no ledger, no
publish, no logging. Serve it with ``gunicorn bench.bare_app:app``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from config.settings import load_settings
from ingest.webhooks import webhook_request
from providers.errors import WebhookRejected
from providers.http import new_http_client
from providers.registry import Accounts

__all__ = ["app", "create_bare_app"]


def create_bare_app() -> Flask:
    """A Flask app with ``POST /webhooks/<provider>`` (verify only) and ``GET /healthz``."""
    settings = load_settings()
    accounts = Accounts(settings, new_http_client(settings.http_timeout_seconds))
    bare = Flask("callrec-bench-bare")
    bare.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    base = settings.public_base_url

    @bare.post("/webhooks/<name>")
    def receive(name: str) -> Any:
        provider = accounts.provider(name)
        webhook = webhook_request(request.get_data(cache=False), base)
        try:
            provider.verify(webhook)
        except WebhookRejected as exc:
            return jsonify(error=exc.reason), exc.status
        return jsonify(status="accepted"), 200

    @bare.get("/healthz")
    def healthz() -> Any:
        return jsonify(status="ok")

    return bare


app = create_bare_app()
