"""What the ledger says about each provider account, for operators (the status page).

Per (provider, account) and window (the last hour, the last day): recordings received, stored
and failed, and the time to capture (``created_at`` → ``stored_at``, p50/p99); the backlog now
(rows not final) and the age of its oldest row; and the latest failures with their reasons.

Every query is bounded and served by ``ix_recordings_state_updated`` (state, updated_at):
``updated_at`` only moves on a state transition, so a final row's ``updated_at`` is when it
became final, and every row's ``updated_at`` is at or after its ``created_at``. Rows received
since T are therefore found as ``state IN (every state) AND updated_at >= T AND created_at >= T``,
an index range per state, never a scan of the table. Percentiles come from at most
``DURATION_SAMPLE`` of the latest stored rows (``WindowStats.sampled`` says when they were cut).
Reasons are redacted (``config.redact``: URL query strings, bearer tokens, phone numbers).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from config.redact import redact
from ledger.models import WAITING_STATES, Recording, State, utcnow

__all__ = [
    "DURATION_SAMPLE",
    "WINDOWS",
    "AccountOverview",
    "Failure",
    "Overview",
    "WindowStats",
    "overview",
    "percentile",
]

#: (label, length) of each window, the longest last.
WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("last hour", timedelta(hours=1)),
    ("last day", timedelta(days=1)),
)
DURATION_SAMPLE = 20_000
ALL_STATES = (
    State.ACCEPTED,
    State.FETCHING,
    State.RETRYING,
    State.STORED,
    State.FAILED,
    State.RESOLVED,
)
BACKLOG_STATES = (*WAITING_STATES, State.FETCHING)
REASON_CHARS = 300
KEY_CHARS = 80

AccountKey = tuple[str, str]


@dataclass(frozen=True)
class WindowStats:
    received: int = 0
    stored: int = 0
    failed: int = 0
    p50_seconds: float | None = None
    p99_seconds: float | None = None
    sampled: bool = False


@dataclass(frozen=True)
class AccountOverview:
    provider: str
    account: str
    windows: dict[str, WindowStats]
    backlog: int
    oldest_backlog_seconds: float | None


@dataclass(frozen=True)
class Failure:
    id: int
    provider: str
    account: str
    kind: str
    key: str  # redacted, shortened
    attempts: int
    failed_at: datetime
    reason: str  # redacted, shortened


@dataclass(frozen=True)
class Overview:
    at: datetime
    accounts: list[AccountOverview]
    failures: list[Failure]


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0 < q <= 1) of ascending values; None if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def _shorten(text: str, limit: int) -> str:
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def overview(
    sessions: sessionmaker[Session],
    accounts: Iterable[AccountKey] = (),
    *,
    failures: int = 20,
    now: datetime | None = None,
) -> Overview:
    """The operators' view of the ledger; ``accounts`` are listed even when they have no rows."""
    now = now or utcnow()
    starts = {label: now - length for label, length in WINDOWS}
    oldest = min(starts.values())
    received: dict[AccountKey, dict[str, int]] = defaultdict(dict)
    finals: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    durations: dict[AccountKey, list[tuple[datetime, float]]] = defaultdict(list)

    def per_window(column: InstrumentedAttribute[datetime]) -> list[ColumnElement[int]]:
        return [func.sum(case((column >= start, 1), else_=0)) for start in starts.values()]

    def counts(sums: Sequence[int | None]) -> dict[str, int]:
        return {label: int(n or 0) for label, n in zip(starts, sums, strict=True)}

    with sessions() as session:
        for row in session.execute(
            select(Recording.provider, Recording.account, *per_window(Recording.created_at))
            .where(
                Recording.state.in_(ALL_STATES),
                Recording.updated_at >= oldest,
                Recording.created_at >= oldest,
                Recording.kind == "recording",
            )
            .group_by(Recording.provider, Recording.account)
        ):
            received[(row[0], row[1])] = counts(row[2:])
        for final in session.execute(
            select(
                Recording.provider,
                Recording.account,
                Recording.state,
                *per_window(Recording.updated_at),
            )
            .where(
                Recording.state.in_((State.STORED, State.FAILED)), Recording.updated_at >= oldest
            )
            .group_by(Recording.provider, Recording.account, Recording.state)
        ):
            finals[(final[0], final[1], final[2])] = counts(final[3:])
        sample = session.execute(
            select(
                Recording.provider, Recording.account, Recording.created_at, Recording.updated_at
            )
            .where(Recording.state == State.STORED, Recording.updated_at >= oldest)
            .order_by(Recording.updated_at.desc())
            .limit(DURATION_SAMPLE)
        ).all()
        for provider, account, created_at, stored_at in sample:
            # A stored row's updated_at is when it was stored (stored_at, to the microsecond).
            seconds = max(0.0, (stored_at - created_at).total_seconds())
            durations[(provider, account)].append((stored_at, seconds))
        backlog = {
            (row[0], row[1]): (int(row[2]), row[3])
            for row in session.execute(
                select(
                    Recording.provider,
                    Recording.account,
                    func.count(),
                    func.min(Recording.created_at),
                )
                .where(Recording.state.in_(BACKLOG_STATES))
                .group_by(Recording.provider, Recording.account)
            )
        }
        latest_failures = [
            Failure(
                id=row.id,
                provider=row.provider,
                account=row.account,
                kind=row.kind,
                key=_shorten(row.recording_key, KEY_CHARS),
                attempts=row.attempts,
                failed_at=row.updated_at,
                reason=_shorten(row.last_error or "(no reason recorded)", REASON_CHARS),
            )
            for row in session.execute(
                select(Recording)
                .where(Recording.state == State.FAILED)
                .order_by(Recording.updated_at.desc(), Recording.id.desc())
                .limit(failures)
            ).scalars()
        ]

    sampled = len(sample) >= DURATION_SAMPLE
    keys = set(accounts) | set(received) | {k[:2] for k in finals} | set(backlog)
    rows = []
    for key in sorted(keys):
        windows = {}
        for label, start in starts.items():
            times = sorted(s for at, s in durations.get(key, ()) if at >= start)
            windows[label] = WindowStats(
                received=received.get(key, {}).get(label, 0),
                stored=finals.get((*key, State.STORED), {}).get(label, 0),
                failed=finals.get((*key, State.FAILED), {}).get(label, 0),
                p50_seconds=percentile(times, 0.50),
                p99_seconds=percentile(times, 0.99),
                sampled=sampled,
            )
        waiting, first = backlog.get(key, (0, None))
        rows.append(
            AccountOverview(
                provider=key[0],
                account=key[1],
                windows=windows,
                backlog=waiting,
                oldest_backlog_seconds=None
                if first is None
                else max(0.0, (now - first).total_seconds()),
            )
        )
    return Overview(at=now, accounts=rows, failures=latest_failures)
