"""Reconciliation: list each account's recordings on a schedule, so a lost webhook loses nothing.

* ``schedule_polls`` (a beat task, every ``poll_tick_seconds``) enqueues one ``poll`` per
  polled account whose interval has passed; ``account_state.schedule_poll`` lets exactly one
  scheduler per interval do it, so several beats are safe.
* ``poll_account`` (a task on ``<prefix>.poll``) takes the account's ledger lease (one poll per
  account at a time, across every worker and host), lists ``[watermark - OVERLAP, now]`` (first
  poll: ``now - LOOKBACK``) page by page, inserts the unseen recordings with
  ``accept_refs(source="poll")`` (existing rows are never touched: a webhook and a poll of the
  same recording make one row), publishes the new rows, and moves the watermark to the window's
  end only after every page was listed and committed. A failure records its reason on the
  account's row and the next interval lists the same window again.
* ``walk_window`` is that listing, shared with ``callrec backfill`` (which never moves the
  watermark).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded

from config.logging import log_context
from config.settings import Settings
from ledger import accept_refs
from ledger.accept import known_keys
from ledger.account_state import (
    acquire_lease,
    finish_poll,
    paused_until,
    poll_state,
    schedule_poll,
)
from ledger.models import Source, utcnow
from providers.base import Account, Provider, RecordingRef
from providers.errors import CaptureError, ConfigurationMissing, RetryLater
from providers.registry import UnknownAccount
from workers.ratelimits import note_rate_limit
from workers.runtime import Runtime

__all__ = [
    "PollOutcome",
    "WindowProgress",
    "poll_account",
    "poll_tick_seconds",
    "poll_window",
    "schedule_polls",
    "walk_window",
]

logger = logging.getLogger(__name__)

#: The longest window one poll lists; an account far behind catches up one window per poll.
MAX_WINDOW = timedelta(days=1)

#: Sends one poll wake-up: (provider, account).
SendPoll = Callable[[str, str], None]


@dataclass
class WindowProgress:
    """What listing one window found: pages, recordings listed, rows new to the ledger."""

    since: datetime
    until: datetime
    pages: int = 0
    found: int = 0
    new: int = 0
    missing: list[RecordingRef] = field(default_factory=list)  # dry run: not in the ledger


@dataclass(frozen=True)
class PollOutcome:
    """``status``: polled, busy (another poll holds the lease), paused, unsupported, failed,
    unknown (no such account)."""

    status: str
    detail: str | None = None
    progress: WindowProgress | None = None


def poll_interval(account: Account, settings: Settings) -> int:
    return account.poll_interval_seconds or settings.poll_interval_seconds


def poll_tick_seconds(settings: Settings, accounts: list[Account]) -> float:
    """How often beat runs the scheduler: a fifth of the shortest interval, at least 2 s."""
    intervals = [settings.poll_interval_seconds]
    intervals += [poll_interval(a, settings) for a in accounts if a.polled]
    return max(2.0, min(intervals) / 5)


def poll_window(
    watermark: datetime | None, now: datetime, settings: Settings
) -> tuple[datetime, datetime]:
    """``[since, until]`` of the next poll: re-read OVERLAP behind the watermark, or LOOKBACK
    on the first poll; at most ``MAX_WINDOW`` long (and longer than the overlap, so a poll
    always moves the watermark forward)."""
    overlap = timedelta(seconds=settings.poll_overlap_seconds)
    if watermark is None:
        since = now - timedelta(seconds=settings.poll_lookback_seconds)
    else:
        since = min(watermark, now) - overlap
    return since, min(now, since + max(MAX_WINDOW, 2 * overlap))


def schedule_polls(runtime: Runtime, send_poll: SendPoll) -> int:
    """Enqueue a poll for every polled account that is due; return how many were sent."""
    settings = runtime.settings
    accounts = runtime.accounts.accounts()
    half_tick = timedelta(seconds=poll_tick_seconds(settings, accounts) / 2)
    sent = 0
    for account in accounts:
        if not account.polled:
            continue
        interval = timedelta(seconds=poll_interval(account, settings)) - half_tick
        if not schedule_poll(runtime.sessions, account.provider, account.name, interval):
            continue
        try:
            send_poll(account.provider, account.name)
        except Exception as exc:  # the broker is down: this interval's poll is skipped
            logger.warning(
                "could not enqueue the poll of %s/%s (%s); next interval",
                account.provider,
                account.name,
                type(exc).__name__,
            )
            continue
        sent += 1
    return sent


def walk_window(
    runtime: Runtime,
    provider: Provider,
    since: datetime,
    until: datetime,
    *,
    dry_run: bool = False,
    on_page: Callable[[WindowProgress], None] | None = None,
    source: str = Source.POLL,
) -> WindowProgress:
    """List every page of ``[since, until]``; insert and publish the unseen recordings.

    With ``dry_run`` nothing is written: ``missing`` collects what the ledger lacks. New rows
    get ``source`` (``Source.BACKFILL`` from ``callrec backfill``: their own capture queue).
    Provider errors propagate (the caller records them); pages already committed stay.
    """
    account = provider.account
    progress = WindowProgress(since, until)
    for page in provider.list_pages(since, until):
        progress.pages += 1
        progress.found += len(page)
        if dry_run:
            known = known_keys(
                runtime.sessions, account.provider, account.name, [r.ledger_key for r in page]
            )
            missing = [ref for ref in page if ref.ledger_key not in known]
            progress.missing.extend(missing)
            progress.new += len(missing)
        elif page:
            result = accept_refs(
                runtime.sessions, account.provider, account.name, page, source=source
            )
            runtime.publish(result.new_ids)
            progress.new += len(result.new_ids)
        if on_page is not None:
            on_page(progress)
    return progress


def poll_account(runtime: Runtime, provider_name: str, account_name: str) -> PollOutcome:
    """One poll of one account (the body of the ``callrec.poll`` task)."""
    with log_context(provider=provider_name, account=account_name):
        try:
            provider = runtime.accounts.provider(provider_name, account_name)
        except UnknownAccount:
            logger.warning("poll of an account that is not configured; skipped")
            return PollOutcome("unknown")
        lease = timedelta(seconds=runtime.settings.stuck_after_seconds)
        token = acquire_lease(runtime.sessions, provider_name, account_name, lease)
        if token is None:
            logger.info("another poll of this account is running; skipped")
            return PollOutcome("busy")
        return _poll_holding(runtime, provider, token)


def _poll_holding(runtime: Runtime, provider: Provider, token: str) -> PollOutcome:
    sessions, account = runtime.sessions, provider.account

    def failed(status: str, reason: str) -> PollOutcome:
        finish_poll(sessions, account.provider, account.name, token, error=reason)
        return PollOutcome(status, reason)

    paused = paused_until(sessions, account.provider, account.name)
    if paused is not None:
        reason = f"skipped: account paused by a rate limit until {paused.isoformat()}"
        logger.info("poll %s", reason)
        return failed("paused", reason)
    state = poll_state(sessions, account.provider, account.name)
    since, until = poll_window(state.watermark if state else None, utcnow(), runtime.settings)
    try:
        progress = walk_window(runtime, provider, since, until)
    except NotImplementedError as exc:
        logger.info("not polled: %s has no list API (%s)", account.provider, exc)
        return failed("unsupported", f"not polled: no list API ({exc})")
    except RetryLater as exc:
        note_rate_limit(sessions, account.provider, account.name, exc, "poll")
        logger.warning("poll failed, next interval lists the window again: %s", exc.reason)
        return failed("failed", exc.reason)
    except CaptureError as exc:
        logger.warning("poll failed, next interval lists the window again: %s", exc.reason)
        return failed("failed", exc.reason)
    except ConfigurationMissing as exc:
        logger.warning("poll failed: not configured: %s", exc)
        return failed("failed", f"not configured: {exc}")
    except SoftTimeLimitExceeded:
        logger.warning("poll exceeded the task time limit; next interval lists the window again")
        return failed("failed", "poll exceeded the task time limit")
    except Exception as exc:  # a bug must not kill the schedule: recorded, retried next time
        logger.exception("poll crashed")
        return failed("failed", f"internal error: {type(exc).__name__}")
    finish_poll(
        sessions,
        account.provider,
        account.name,
        token,
        watermark=until,
        found=progress.found,
        new=progress.new,
    )
    logger.info(
        "polled [%s, %s]: %s pages, %s listed, %s new",
        since.isoformat(timespec="seconds"),
        until.isoformat(timespec="seconds"),
        progress.pages,
        progress.found,
        progress.new,
    )
    return PollOutcome("polled", None, progress)
