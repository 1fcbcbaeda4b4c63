"""``GET /status``: the operators' page, and its re-drive button for failed recordings.

Server-rendered HTML (``templates/status.html``, autoescaped), no JavaScript. Behind HTTP basic
auth from ``CALLREC_STATUS_BASIC_AUTH`` (``user:password``). Without that setting the page is
off and answers 404 with a line saying how to turn it on: it is a deliberate configuration,
not an outage, so it must not count as a server error (a 503) in load balancers, metrics or
Sentry, and it is never open by default.

The re-drive form is a POST with a CSRF token: basic-auth credentials are sent by the browser
on their own, so another site could otherwise make an operator's browser post the form. The
token is an HMAC, keyed by the configured credentials, of the recording id and the time it was
issued: every web process checks it without shared state, it expires after
``CSRF_TTL_SECONDS``, and changing the credentials revokes every token. Responses forbid
framing (clickjacking of the button) and caching.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from ledger.overview import WINDOWS, overview
from ledger.redrive import redrive

__all__ = ["csrf_token", "status"]

logger = logging.getLogger(__name__)

status = Blueprint("status", __name__, template_folder="templates")

CSRF_TTL_SECONDS = 12 * 3600
REALM = 'Basic realm="callrec status", charset="UTF-8"'
OFF_MESSAGE = "The status page is off. Set CALLREC_STATUS_BASIC_AUTH=user:password to turn it on.\n"
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


def _text(body: str, code: int, **headers: str) -> Response:
    return Response(body, code, {"Content-Type": "text/plain; charset=utf-8", **headers})


def _credentials() -> str | None:
    from ingest.app import state

    return state().settings.status_basic_auth


def csrf_token(credentials: str, recording_id: int, issued: int | None = None) -> str:
    """The re-drive form's token for ``recording_id``: ``<issued unix s>.<hex HMAC>``."""
    issued = int(time.time()) if issued is None else issued
    key = hashlib.sha256(b"callrec status csrf\0" + credentials.encode()).digest()
    mac = hmac.new(key, f"redrive:{recording_id}:{issued}".encode(), hashlib.sha256)
    return f"{issued}.{mac.hexdigest()}"


def _csrf_valid(credentials: str, recording_id: int, token: str) -> bool:
    issued, _, _mac = token.partition(".")
    if not (issued.isascii() and issued.isdigit()):
        return False
    age = time.time() - int(issued)
    if not -60 <= age <= CSRF_TTL_SECONDS:
        return False
    expected = csrf_token(credentials, recording_id, int(issued))
    return hmac.compare_digest(expected.encode(), token.encode())


def _authorized(credentials: str) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    user, _, password = credentials.partition(":")
    user_ok = hmac.compare_digest((auth.username or "").encode(), user.encode())
    password_ok = hmac.compare_digest((auth.password or "").encode(), password.encode())
    return user_ok and password_ok


@status.before_request
def _guard() -> Response | None:
    credentials = _credentials()
    if credentials is None:
        return _text(OFF_MESSAGE, 404)
    if not _authorized(credentials):
        return _text("Authentication required.\n", 401, **{"WWW-Authenticate": REALM})
    return None


@status.after_request
def _harden(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


@status.get("/status")
def page() -> Any:
    from ingest.app import state

    current = state()
    credentials = current.settings.status_basic_auth
    assert credentials is not None  # _guard
    configured = [(a.provider, a.name) for a in current.accounts.accounts()]
    try:
        report = overview(current.sessions, configured)
    except SQLAlchemyError as exc:
        logger.error("status page: ledger unavailable (%s)", type(exc).__name__)
        return _text("The ledger is unavailable; try again shortly.\n", 503)
    return render_template(
        "status.html",
        report=report,
        windows=[label for label, _ in WINDOWS],
        tokens={f.id: csrf_token(credentials, f.id) for f in report.failures},
        duration=_duration,
        redriven=_int_arg("redriven"),
        unchanged=_int_arg("unchanged"),
    )


@status.post("/status/recordings/<int:recording_id>/redrive")
def redrive_recording(recording_id: int) -> Any:
    from ingest.app import state

    current = state()
    credentials = current.settings.status_basic_auth
    assert credentials is not None  # _guard
    if not _csrf_valid(credentials, recording_id, request.form.get("csrf_token", "")):
        return _text("The form has expired or is not ours: reload the status page.\n", 403)
    user = (request.authorization.username if request.authorization else None) or "?"
    try:
        changed = redrive(current.sessions, recording_id, reason=f"status page, by {user}")
    except SQLAlchemyError as exc:
        logger.error("status page: re-drive not recorded (%s)", type(exc).__name__)
        return _text("The ledger is unavailable; nothing was changed.\n", 503)
    logger.info("re-drive of recording %s from the status page: changed=%s", recording_id, changed)
    if changed:
        return redirect(url_for("status.page", redriven=recording_id), 303)
    return redirect(url_for("status.page", unchanged=recording_id), 303)
