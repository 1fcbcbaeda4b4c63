"""What the commands share: settings, a ledger session factory, ISO instants, stderr progress."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import click
from sqlalchemy.orm import Session, sessionmaker

from config.settings import ConfigError, Settings, load_settings

__all__ = ["Counter", "ledger_sessions", "moment", "optional_moment", "settings"]


def settings() -> Settings:
    """The validated settings and accounts file, or a one-line ``ClickException``."""
    from providers.registry import configured_accounts

    try:
        loaded = load_settings()
        configured_accounts(loaded)
        return loaded
    except ConfigError as exc:
        raise click.ClickException(f"bad configuration: {exc}") from None


@contextmanager
def ledger_sessions(loaded: Settings) -> Iterator[sessionmaker[Session]]:
    from ledger import make_engine, make_session_factory

    engine = make_engine(loaded.database_url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def _parse_moment(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("expected ISO 8601, e.g. 2026-01-31T00:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def moment(_ctx: click.Context, _param: click.Parameter, value: str) -> datetime:
    """Option callback: an ISO 8601 instant; without an offset it is UTC."""
    return _parse_moment(value)


def optional_moment(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> datetime | None:
    return None if value is None else _parse_moment(value)


class Counter:
    """A progress line on stderr (``label: N unit``), rewritten at most every ``every`` s."""

    def __init__(self, label: str, unit: str, every: float = 1.0) -> None:
        self.label, self.unit, self.every = label, unit, every
        self.count = 0
        self._shown = time.monotonic()

    def add(self, n: int = 1) -> None:
        self.count += n
        if time.monotonic() - self._shown >= self.every:
            self._show()

    def _show(self) -> None:
        self._shown = time.monotonic()
        click.echo(f"{self.label}: {self.count} {self.unit}", err=True)

    def done(self) -> None:
        self._show()
