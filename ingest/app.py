"""The Flask app factory: webhook routes, health, and the per-process state they share."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from flask import Flask, jsonify
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from config.metrics import configure_metrics
from config.settings import Settings
from ingest.health import health
from ingest.metrics import metrics_view
from ingest.status import status
from ingest.webhooks import record_committed, webhooks
from ledger import make_engine, make_session_factory
from ledger.group_commit import GroupCommitter
from providers.http import new_http_client
from providers.registry import Accounts

__all__ = ["IngestState", "create_app"]

logger = logging.getLogger(__name__)


@dataclass
class IngestState:
    settings: Settings
    sessions: sessionmaker[Session]
    committer: GroupCommitter
    accounts: Accounts
    celery: Celery
    #: When a webhook was received (unix seconds): signature timestamps are judged against it.
    clock: Callable[[], float] = field(default=time.time)


def create_app(settings: Settings) -> Flask:
    """Build the web app; connections are opened lazily, so this is safe before a fork."""
    from workers.celery_config import make_celery

    app = Flask("callrec")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    configure_metrics(settings)
    engine = make_engine(settings.database_url, pre_ping=False)
    sessions = make_session_factory(engine)
    celery = make_celery(settings)  # only for /readyz: the relay process publishes
    app.extensions["callrec"] = IngestState(
        settings=settings,
        sessions=sessions,
        committer=GroupCommitter(engine, on_commit=record_committed),
        accounts=Accounts(settings, new_http_client(settings.http_timeout_seconds)),
        celery=celery,
    )
    if settings.trust_proxy_hops:
        # Twilio signs the public URL: behind N trusted proxies, take scheme, host, port (and
        # the client address) from their X-Forwarded-* headers. Off by default: a client could
        # otherwise choose the URL a signature is checked against.
        hops = settings.trust_proxy_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops
        )
    app.register_blueprint(webhooks)
    app.register_blueprint(health)
    app.register_blueprint(metrics_view)
    app.register_blueprint(status)  # /status: off (404) unless CALLREC_STATUS_BASIC_AUTH

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        # JSON for every HTTP error (404 route, 405 method, 413 body too large).
        return jsonify(error=(exc.description or exc.name)[:200]), exc.code

    return app


def state() -> IngestState:
    from flask import current_app

    return current_app.extensions["callrec"]
