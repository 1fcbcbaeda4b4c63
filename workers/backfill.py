"""``callrec backfill``: list a past range of one account and capture what the ledger lacks.

The same listing as a poll (``reconcile.walk_window``: every page, ``accept_refs``, new rows
published), without the poll lease or the watermark, with progress on stderr. Its new rows have
``source="backfill"``, so their captures go to ``<prefix>.capture.backfill`` and never queue
ahead of a fresh recording (``ledger.publish``). A rate
limit pause of the account is respected (the command stops and says until when); a failed page
stops it with the reason, and what was committed so far is kept (running it again is safe).
"""

from __future__ import annotations

from datetime import datetime

import click

from ledger.account_state import paused_until
from ledger.models import Source
from providers.errors import CaptureError, ConfigurationMissing, RetryLater
from providers.registry import UnknownAccount
from workers.ratelimits import note_rate_limit
from workers.reconcile import WindowProgress, walk_window
from workers.runtime import Runtime

__all__ = ["run_backfill"]


def run_backfill(
    runtime: Runtime,
    provider_name: str,
    account_name: str,
    since: datetime,
    until: datetime,
    *,
    dry_run: bool = False,
) -> WindowProgress:
    """List ``[since, until]`` for the account; print progress; raise ``ClickException``."""
    try:
        provider = runtime.accounts.provider(provider_name, account_name)
    except UnknownAccount as exc:
        raise click.ClickException(str(exc)) from None
    paused = paused_until(runtime.sessions, provider_name, account_name)
    if paused is not None:
        raise click.ClickException(
            f"{provider_name}/{account_name} is paused by a rate limit until "
            f"{paused.isoformat(timespec='seconds')}; run again after that"
        )
    label = "missing" if dry_run else "new"
    click.echo(
        f"backfill {provider_name}/{account_name} [{since.isoformat()}, {until.isoformat()}]"
        + (" (dry run)" if dry_run else ""),
        err=True,
    )

    def report(progress: WindowProgress) -> None:
        click.echo(
            f"page {progress.pages}: {progress.found} recordings listed, {progress.new} {label}",
            err=True,
        )

    try:
        progress = walk_window(
            runtime,
            provider,
            since,
            until,
            dry_run=dry_run,
            on_page=report,
            source=Source.BACKFILL,
        )
    except NotImplementedError as exc:
        raise click.ClickException(f"{provider_name} has no list API: {exc}") from None
    except RetryLater as exc:
        note_rate_limit(runtime.sessions, provider_name, account_name, exc, "poll")
        raise _stopped(exc.reason) from None
    except CaptureError as exc:
        raise _stopped(exc.reason) from None
    except ConfigurationMissing as exc:
        raise click.ClickException(f"not configured: {exc}") from None
    for ref in progress.missing:
        click.echo(f"missing {ref.ledger_key}" + (f" call={ref.call_id}" if ref.call_id else ""))
    click.echo(
        f"done: {progress.pages} pages, {progress.found} recordings listed, "
        f"{progress.new} {label}" + ("" if dry_run else " (published for capture)")
    )
    return progress


def _stopped(reason: str) -> click.ClickException:
    return click.ClickException(
        f"listing stopped: {reason}; rows found so far are kept, running again is safe"
    )
