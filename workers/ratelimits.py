"""Rate limits shared by every process of one account: a 429 pauses the account in the ledger.

The per-process pacer (``providers/ratelimit.py``) cannot see other processes sharing a key.
When the provider's API answers 429 with a wait (``Retry-After``, ``x-ratelimit-reset``), the
account is paused in ``account_state`` until then; every process reads that before calling the
API for the account: captures are rescheduled (never slept in a worker), polls are skipped until
the next interval, a backfill waits. Limits: a 429 without a wait hint only backs off the one
row or poll that got it; calls already in flight when the pause is written still go out; the
pause is read once per capture attempt or poll, not before every request of a poll.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from config.metrics import metrics
from ledger.account_state import pause
from ledger.models import utcnow
from providers.errors import RateLimited, RetryLater

__all__ = ["note_rate_limit"]

logger = logging.getLogger(__name__)


def note_rate_limit(
    sessions: sessionmaker[Session],
    provider: str,
    account: str,
    exc: RetryLater,
    during: str = "capture",
) -> datetime | None:
    """Pause the account if ``exc`` is a 429 with a wait; return until when (or None).

    Every 429 is counted (``callrec_rate_limited_total``): it is waited out, by the row's
    backoff or by the account's pause. ``during``: ``capture`` or ``poll``.
    """
    if not isinstance(exc, RateLimited):
        return None
    metrics().rate_limited.labels(provider, account, during).inc()
    if not exc.retry_after:
        return None
    until = utcnow() + timedelta(seconds=exc.retry_after)
    try:
        pause(sessions, provider, account, until, exc.reason)
    except Exception as failure:  # the ledger is down: the row's own retry still waits
        logger.warning("could not record the rate-limit pause (%s)", type(failure).__name__)
        return None
    logger.warning(
        "account %s/%s paused until %s by a rate limit: %s",
        provider,
        account,
        until.isoformat(timespec="seconds"),
        exc.reason,
    )
    return until
