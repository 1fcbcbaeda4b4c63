"""Sentry set-up with scrubbing: no request bodies, no PII, no signed URLs or phone numbers."""

from __future__ import annotations

from typing import Any

from config.redact import redact_value
from config.settings import Settings

__all__ = ["configure_sentry"]


def _before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    return redact_value(event)


def _before_breadcrumb(crumb: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    return redact_value(crumb)


def configure_sentry(settings: Settings, component: str) -> bool:
    """Initialise sentry-sdk when ``CALLREC_SENTRY_DSN`` is set; return whether it did."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.flask import FlaskIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        send_default_pii=False,
        max_request_body_size="never",
        include_local_variables=False,
        before_send=_before_send,  # type: ignore[arg-type]
        before_breadcrumb=_before_breadcrumb,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        server_name=component,
    )
    return True
