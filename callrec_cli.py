"""``callrec``: the operator's command line (migrate, check settings, sweep, inspect the ledger).

The larger commands live in ``callrec_commands/`` (status, redrive, verify, keys) and are
registered here.
"""

from __future__ import annotations

import sys
from datetime import datetime

import click
from sqlalchemy import select

from callrec_commands.common import ledger_sessions, moment
from callrec_commands.common import settings as cli_settings
from callrec_commands.flower import flower
from callrec_commands.keys import keys
from callrec_commands.redrive import redrive
from callrec_commands.status import status
from callrec_commands.verify import verify

__all__ = ["main"]


@click.group()
def main() -> None:
    """callrec: capture call recordings byte-exact and exactly once."""


@main.command()
def migrate() -> None:
    """Create or upgrade the ledger schema (idempotent, safe to run from several processes)."""
    from ledger import migrate as run_migrations

    settings = cli_settings()
    run_migrations(settings.database_url)
    click.echo("ledger schema is up to date")


@main.command("config")
@click.option("--check", is_flag=True, help="Only validate the environment.")
def config_command(check: bool) -> None:
    """Print the configuration table (Markdown), or validate the environment."""
    from config.__main__ import markdown_table

    settings = cli_settings()
    if check:
        click.echo(
            f"configuration ok (ledger {settings.database_url.split(':', 1)[0]}, "
            f"storage {settings.storage_url.split(':', 1)[0]})"
        )
        return
    click.echo(markdown_table())


@main.command()
@click.argument("recording_id", type=int)
def show(recording_id: int) -> None:
    """One ledger row and its history."""
    from ledger import Recording, RecordingEvent

    with ledger_sessions(cli_settings()) as sessions, sessions() as session:
        row = session.get(Recording, recording_id)
        if row is None:
            raise click.ClickException(f"no ledger row {recording_id}")
        events = (
            session.execute(
                select(RecordingEvent)
                .where(RecordingEvent.recording_id == recording_id)
                .order_by(RecordingEvent.id)
            )
            .scalars()
            .all()
        )
        children = list(
            session.execute(
                select(Recording.id).where(Recording.parent_id == recording_id)
            ).scalars()
        )
    for name in (
        "id",
        "provider",
        "account",
        "recording_key",
        "kind",
        "source",
        "call_id",
        "parent_id",
        "state",
        "attempts",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "enqueued_at",
        "claimed_at",
        "last_error",
        "storage_key",
        "size_bytes",
        "sha256",
        "stored_at",
    ):
        click.echo(f"{name:>16}: {getattr(row, name)}")
    if children:
        click.echo(f"{'resolved into':>16}: rows {', '.join(str(i) for i in children)}")
    click.echo("history:")
    for item in events:
        click.echo(
            f"  {item.at.isoformat()}  attempt {item.attempt}  {item.state}"
            + (f"  {item.detail}" if item.detail else "")
        )


@main.command()
def relay() -> None:
    """Publish newly accepted recordings to the broker (runs until SIGTERM/SIGINT)."""
    import signal
    import threading

    from workers.relay import relay as run_relay
    from workers.tasks import get_runtime

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    runtime = get_runtime()
    click.echo("relay started", err=True)
    published = run_relay(runtime, stop)
    click.echo(f"relay stopped after publishing {published} rows", err=True)


@main.command()
def sweep() -> None:
    """Publish every row that needs a worker now (what the beat schedule does periodically)."""
    from workers.sweep import sweep as run_sweep
    from workers.tasks import get_runtime

    click.echo(f"published {run_sweep(get_runtime())} rows")


@main.command()
@click.option("--provider", required=True, help="Provider name, e.g. telnyx.")
@click.option("--account", default="default", show_default=True, help="Account name.")
@click.option("--since", required=True, callback=moment, help="Start (ISO 8601; UTC if bare).")
@click.option("--until", required=True, callback=moment, help="End (ISO 8601; UTC if bare).")
@click.option("--dry-run", is_flag=True, help="Only print the recordings the ledger lacks.")
def backfill(provider: str, account: str, since: datetime, until: datetime, dry_run: bool) -> None:
    """Capture an account's recordings of a past range (the poll's listing; no watermark move)."""
    if since >= until:
        raise click.BadParameter("--since must be before --until")
    cli_settings()
    from workers.backfill import run_backfill
    from workers.tasks import get_runtime

    run_backfill(get_runtime(), provider, account, since, until, dry_run=dry_run)


for _command in (status, redrive, verify, keys, flower):
    main.add_command(_command)

if __name__ == "__main__":
    sys.exit(main())
