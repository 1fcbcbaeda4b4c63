"""``callrec``: the operator's command line (migrate, check settings, sweep, inspect the ledger)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
from sqlalchemy import func, select

from config.settings import ConfigError, Settings, load_settings

__all__ = ["main"]


def _settings() -> Settings:
    from providers.registry import configured_accounts

    try:
        settings = load_settings()
        configured_accounts(settings)
        return settings
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None


@click.group()
def main() -> None:
    """callrec: capture call recordings byte-exact and exactly once."""


@main.command()
def migrate() -> None:
    """Create or upgrade the ledger schema (idempotent, safe to run from several processes)."""
    from ledger import migrate as run_migrations

    settings = _settings()
    run_migrations(settings.database_url)
    click.echo("ledger schema is up to date")


@main.command("config")
@click.option("--check", is_flag=True, help="Only validate the environment.")
def config_command(check: bool) -> None:
    """Print the configuration table (Markdown), or validate the environment."""
    from config.__main__ import markdown_table

    settings = _settings()
    if check:
        click.echo(
            f"configuration ok (ledger {settings.database_url.split(':', 1)[0]}, "
            f"storage {settings.storage_url.split(':', 1)[0]})"
        )
        return
    click.echo(markdown_table())


@main.command()
def status() -> None:
    """Rows per provider, account and state."""
    from ledger import Recording, make_engine, make_session_factory

    settings = _settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    with sessions() as session:
        rows = session.execute(
            select(Recording.provider, Recording.account, Recording.state, func.count())
            .group_by(Recording.provider, Recording.account, Recording.state)
            .order_by(Recording.provider, Recording.account, Recording.state)
        ).all()
    if not rows:
        click.echo("the ledger is empty")
    for provider, account, state, count in rows:
        click.echo(f"{provider:<12} {account:<16} {state:<10} {count}")


@main.command()
@click.argument("recording_id", type=int)
def show(recording_id: int) -> None:
    """One ledger row and its history."""
    from ledger import Recording, RecordingEvent, make_engine, make_session_factory

    settings = _settings()
    sessions = make_session_factory(make_engine(settings.database_url))
    with sessions() as session:
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
    for name in (
        "id",
        "provider",
        "account",
        "recording_key",
        "kind",
        "state",
        "attempts",
        "created_at",
        "updated_at",
        "next_attempt_at",
        "last_error",
        "storage_key",
        "size_bytes",
        "sha256",
        "stored_at",
    ):
        click.echo(f"{name:>16}: {getattr(row, name)}")
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


def _moment(_ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    """An ISO 8601 instant; without an offset it is UTC."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("expected ISO 8601, e.g. 2026-01-31T00:00:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command()
@click.option("--provider", required=True, help="Provider name, e.g. telnyx.")
@click.option("--account", default="default", show_default=True, help="Account name.")
@click.option("--since", required=True, callback=_moment, help="Start (ISO 8601; UTC if bare).")
@click.option("--until", required=True, callback=_moment, help="End (ISO 8601; UTC if bare).")
@click.option("--dry-run", is_flag=True, help="Only print the recordings the ledger lacks.")
def backfill(provider: str, account: str, since: datetime, until: datetime, dry_run: bool) -> None:
    """Capture an account's recordings of a past range (the poll's listing; no watermark move)."""
    if since >= until:
        raise click.BadParameter("--since must be before --until")
    _settings()
    from workers.backfill import run_backfill
    from workers.tasks import get_runtime

    run_backfill(get_runtime(), provider, account, since, until, dry_run=dry_run)


if __name__ == "__main__":
    sys.exit(main())
