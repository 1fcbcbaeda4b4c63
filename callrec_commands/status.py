"""``callrec status``: backlog and failures per provider/account, and each account's polls."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime

import click
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from callrec_commands.common import ledger_sessions, settings

__all__ = ["status"]

_STATES = ("accepted", "retrying", "fetching", "stored", "failed", "resolved")
_REASONS_PER_ACCOUNT = 3


def _age(since: datetime | None, now: datetime) -> str:
    """``3d4h``, ``2h5m``, ``4m10s`` or ``7s``; ``-`` for nothing waiting."""
    if since is None:
        return "-"
    seconds = max(0, int((now - since).total_seconds()))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for (name, size), (small, small_size) in itertools.pairwise(units):
        if seconds >= size:
            return f"{seconds // size}{name}{(seconds % size) // small_size}{small}"
    return f"{seconds}s"


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


def _backlog(session: Session, now: datetime) -> None:
    from ledger.models import FINAL_STATES, Recording

    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for provider, account, state, count in session.execute(
        select(Recording.provider, Recording.account, Recording.state, func.count()).group_by(
            Recording.provider, Recording.account, Recording.state
        )
    ):
        counts[(provider, account)][state] = count
    oldest = dict(
        ((provider, account), at)
        for provider, account, at in session.execute(
            select(Recording.provider, Recording.account, func.min(Recording.created_at))
            .where(Recording.state.not_in(FINAL_STATES))
            .group_by(Recording.provider, Recording.account)
        )
    )
    if not counts:
        click.echo("the ledger is empty")
        return
    click.echo(
        f"{'provider':<12} {'account':<16} "
        + " ".join(f"{state:>9}" for state in _STATES)
        + "  oldest waiting"
    )
    for (provider, account), by_state in sorted(counts.items()):
        click.echo(
            f"{provider:<12} {account:<16} "
            + " ".join(f"{by_state.get(state, 0):>9}" for state in _STATES)
            + f"  {_age(oldest.get((provider, account)), now)}"
        )


def _failures(session: Session) -> None:
    from ledger.models import Recording, State

    rows = session.execute(
        select(Recording.provider, Recording.account, Recording.last_error, func.count())
        .where(Recording.state == State.FAILED)
        .group_by(Recording.provider, Recording.account, Recording.last_error)
        .order_by(func.count().desc())
        .limit(200)
    ).all()
    if not rows:
        return
    click.echo("\nfailures by reason (most frequent first):")
    shown: dict[tuple[str, str], int] = defaultdict(int)
    for provider, account, reason, count in rows:
        if shown[(provider, account)] >= _REASONS_PER_ACCOUNT:
            continue
        shown[(provider, account)] += 1
        click.echo(f"  {provider}/{account}  {count:>6}  {(reason or '(no reason)')[:160]}")


def _polls(session: Session, now: datetime) -> None:
    from ledger.models import AccountState

    accounts = list(
        session.execute(
            select(AccountState).order_by(AccountState.provider, AccountState.account)
        ).scalars()
    )
    if not accounts:
        click.echo("\nno account has been polled yet (account_state is empty)")
        return
    click.echo("\npolling (account_state):")
    for row in accounts:
        paused = row.paused_until if row.paused_until and row.paused_until > now else None
        line = (
            f"  {row.provider}/{row.account}  watermark {_when(row.watermark)}"
            f"  last success {_when(row.last_success_at)}"
            f"  last failure {_when(row.last_failure_at)}"
        )
        if row.last_found is not None:
            line += f"  last found {row.last_found} (new {row.last_new})"
        if row.lease_until is not None and row.lease_until > now:
            line += "  polling now"
        if paused is not None:
            line += f"  PAUSED until {_when(paused)}: {row.pause_reason or ''}"
        click.echo(line)
        if row.last_error:
            click.echo(f"      last error: {row.last_error[:200]}")


@click.command()
def status() -> None:
    """Backlog and failures per provider and account, and each account's poll state."""
    from ledger.models import utcnow

    loaded = settings()
    now = utcnow()
    with ledger_sessions(loaded) as sessions, sessions() as session:
        _backlog(session, now)
        _failures(session)
        _polls(session, now)
