"""Sentry set-up with scrubbing: no request bodies, no PII, no signed URLs or phone numbers.

Only bugs and a recording's final failure are events. Expected conditions (a refused webhook,
a 429 waited out, a retry) are logged at INFO/WARNING, which Sentry keeps as breadcrumbs.
A final failure is one event (:func:`report_final_failure`), grouped by provider and reason.
"""

from __future__ import annotations

from typing import Any

from config.redact import redact_value
from config.settings import Settings

__all__ = ["configure_sentry", "report_final_failure"]


def _before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any] | None:
    if _expected(event):
        return None
    return redact_value(event)


def _expected(event: dict[str, Any]) -> bool:
    """A stop, not a failure: billiard logs each prefork child ended by SIGTERM at ERROR when
    the whole process group is told to stop (systemd's default, a test's ``killpg``)."""
    formatted = (event.get("logentry") or {}).get("formatted") or ""
    return event.get("logger") == "multiprocessing" and "(SIGTERM)" in formatted


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
        # No PII is the default; the explicit send_default_pii=False is deprecated (2.7x).
        max_request_body_size="never",
        include_local_variables=False,
        before_send=_before_send,  # type: ignore[arg-type]
        before_breadcrumb=_before_breadcrumb,
        integrations=[FlaskIntegration(), CeleryIntegration()],
        server_name=component,
    )
    return True


def report_final_failure(
    provider: str, account: str, reason: str, detail: str, *, attempt: int
) -> None:
    """Send one event for a recording that ended ``failed`` (no-op without Sentry).

    Grouped by provider and bounded reason (``config.metrics.CAPTURE_FAILURE_REASONS``): one
    issue per (provider, reason), however many recordings fail that way. ``detail`` is redacted
    by ``before_send`` like every event.
    """
    import sentry_sdk

    if not sentry_sdk.get_client().is_active():
        return
    with sentry_sdk.new_scope() as scope:
        scope.fingerprint = ["recording-failed", provider, reason]
        scope.set_tag("provider", provider)
        scope.set_tag("account", account)
        scope.set_tag("reason", reason)
        scope.set_extra("detail", detail[:500])
        scope.set_extra("attempt", attempt)
        sentry_sdk.capture_message(f"recording failed: {provider} {reason}", level="error")
