"""``callrec redrive <id>`` and ``callrec redrive --failed [--provider --account --since]``."""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from datetime import datetime

import click
from sqlalchemy.orm import Session, sessionmaker

from callrec_commands.common import Counter, ledger_sessions, optional_moment, settings
from config.settings import Settings

__all__ = ["redrive"]


def _actor() -> str:
    try:
        return f"{getpass.getuser()} via callrec redrive"
    except (KeyError, OSError):
        return "callrec redrive"


def _publish(loaded: Settings, sessions: sessionmaker[Session], ids: Iterable[int]) -> int:
    """Wake workers for the rows; unsent ones stay unpublished for the relay and sweeper."""
    from ledger.publish import Lane, publish_and_record
    from workers.celery_config import capture_queue_of, make_celery

    celery = make_celery(loaded)

    def send(recording_id: int, countdown: float | None, lane: Lane) -> None:
        queue = capture_queue_of(loaded, lane)
        celery.send_task("callrec.capture", args=[recording_id], countdown=countdown, queue=queue)

    try:
        return len(publish_and_record(send, sessions, ids))
    finally:
        celery.close()


@click.command()
@click.argument("recording_id", type=int, required=False)
@click.option("--failed", is_flag=True, help="Re-drive every failed row (with the filters).")
@click.option("--provider", help="Only this provider's rows (with --failed).")
@click.option("--account", help="Only this account's rows (with --failed).")
@click.option(
    "--since", callback=optional_moment, help="Only rows that failed at or after (ISO 8601)."
)
def redrive(
    recording_id: int | None,
    failed: bool,
    provider: str | None,
    account: str | None,
    since: datetime | None,
) -> None:
    """Put a row (or every failed row) back to waiting, attempts reset, and publish it.

    Each re-drive is recorded in the row's history (`callrec show <id>`). Stored rows, resolved
    lookups and rows a worker holds are refused.
    """
    from ledger.redrive import NotRedrivable, redrive_failed, redrive_row

    if (recording_id is None) == (not failed):
        raise click.UsageError("give either a recording id or --failed")
    if recording_id is not None and (provider or account or since):
        raise click.UsageError("--provider, --account and --since go with --failed")
    loaded = settings()
    with ledger_sessions(loaded) as sessions:
        if recording_id is not None:
            try:
                done = redrive_row(sessions, recording_id, _actor())
            except NotRedrivable as exc:
                raise click.ClickException(str(exc)) from None
            published = _publish(loaded, sessions, [done.id])
            click.echo(
                f"re-drove row {done.id} (was {done.previous_state} after "
                f"{done.previous_attempts} attempts); published {published}"
            )
            return
        counter = Counter("re-driven", "rows")
        published = 0
        for batch in redrive_failed(
            sessions, _actor(), provider=provider, account=account, since=since
        ):
            published += _publish(loaded, sessions, [item.id for item in batch])
            counter.add(len(batch))
        click.echo(f"re-drove {counter.count} failed rows; published {published}")
        if published < counter.count:
            click.echo("the relay or the sweeper publishes the rest", err=True)
