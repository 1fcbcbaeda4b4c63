"""VOXO's clock: US Central wall time without an offset, and the ≤ 2-day list windows.

The seed page (``001``) says the call reports take and return "Central Time (CST)" timestamps as
``YYYY-MM-DD HH:MM:SS`` strings, and that one request covers "up to 2 days". "CST" is read as
the Central *zone* (``America/Chicago``, CDT in summer): the seed's own example lists
``start 2021-08-13 19:36:59`` for the call whose Asterisk ``uniqueId`` is
``atl-ast2-1628901419.8373``, and epoch 1628901419 is 2021-08-14 00:36:59 UTC = 19:36:59 CDT.

Wall time is not monotonic, so:

* **Reading a listed time** (:func:`listed_start_utc`). In the fall-back hour (01:00 to 01:59 on
  the first Sunday of November) every wall time happens twice; in the spring-forward hour
  (02:00 to 02:59 on the second Sunday of March) none happens. When the ``uniqueId`` carries an
  Asterisk epoch within :data:`EPOCH_TOLERANCE` of a candidate, the nearest candidate wins
  (the seed example shows the two agree to the second); otherwise an ambiguous time is the
  *first* occurrence (CDT) and a non-existent one is read with the offset in force before the
  change (CST, i.e. 02:30 → 08:30 UTC), both PEP 495's ``fold=0``.
* **Asking for a UTC window** (:func:`query_windows`). A window is cut into requests of at most
  48 h; a request containing a DST change is cut at 46 h, so that both its wall-time span
  (what VOXO sees in the strings) and any real-time reading of those strings stay ≤ 48 h.
  Each request's wall strings cover every wall time of its instants: across a fall-back, wall
  time steps back an hour, so the request is widened to include the repeated hour.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "CENTRAL",
    "MAX_SPAN",
    "WALL_FORMAT",
    "listed_start_utc",
    "query_windows",
    "wall",
]

CENTRAL = ZoneInfo("America/Chicago")
WALL_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_SPAN = timedelta(days=2)
DST_SPAN = timedelta(hours=46)
EPOCH_TOLERANCE = timedelta(hours=1)
MAX_WINDOWS = 5000  # ≈ 27 years of 2-day requests: a bound on every window loop
_HOUR = timedelta(hours=1)
_UNIQUE_EPOCH = re.compile(r"(?:.*-)?(\d{9,10})\.\d+")


def wall(instant: datetime) -> datetime:
    """The naive Central wall time of an aware instant."""
    return instant.astimezone(CENTRAL).replace(tzinfo=None)


def _floor_second(instant: datetime) -> datetime:
    return instant.replace(microsecond=0)


def _ceil_second(instant: datetime) -> datetime:
    floored = instant.replace(microsecond=0)
    return floored if floored == instant else floored + timedelta(seconds=1)


def _changes(start: datetime, end: datetime) -> Iterator[datetime]:
    """The UTC instants in ``(start, end]`` where the Central offset changes.

    US changes happen at 02:00 wall time, always on a whole UTC hour, so whole hours are enough.
    """
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + _HOUR
    while hour <= end:
        if (hour - timedelta(seconds=1)).astimezone(CENTRAL).utcoffset() != hour.astimezone(
            CENTRAL
        ).utcoffset():
            yield hour
        hour += _HOUR


def _wall_cover(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The smallest wall-time range holding the wall time of every instant in ``[start, end]``."""
    low, high = wall(start), wall(end)
    for change in _changes(start, end):
        low = min(low, wall(change))
        high = max(high, _ceil_second(wall(change - timedelta(microseconds=1))))
    return low, high


def query_windows(since: datetime, until: datetime) -> list[tuple[datetime, datetime, str, str]]:
    """``(utc_start, utc_end, wall_start, wall_end)`` per request covering ``[since, until]``.

    Requests are contiguous in UTC (each starts where the previous ended, so a recording on a
    boundary may be listed twice: callers deduplicate).
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    if until < since:
        raise ValueError("until is before since")
    start, end = _floor_second(since.astimezone(UTC)), _ceil_second(until.astimezone(UTC))
    windows: list[tuple[datetime, datetime, str, str]] = []
    while True:
        stop = min(end, start + MAX_SPAN)
        if next(_changes(start, stop), None) is not None:
            stop = min(stop, start + DST_SPAN)
        low, high = _wall_cover(start, stop)
        windows.append((start, stop, low.strftime(WALL_FORMAT), high.strftime(WALL_FORMAT)))
        if stop >= end:
            return windows
        if len(windows) >= MAX_WINDOWS:
            raise ValueError(f"a window of more than {MAX_WINDOWS} VOXO requests is refused")
        start = stop


def _unique_id_epoch(unique_id: str) -> datetime | None:
    """The channel creation time an Asterisk ``uniqueId`` (``atl-ast2-1628901419.8373``) holds."""
    match = _UNIQUE_EPOCH.fullmatch(unique_id)
    return datetime.fromtimestamp(int(match.group(1)), UTC) if match else None


def listed_start_utc(start: str, unique_id: str = "") -> datetime | None:
    """The UTC instant of a listed ``start`` (None when it is not ``YYYY-MM-DD HH:MM:SS``)."""
    try:
        local = datetime.strptime(start, WALL_FORMAT)
    except (TypeError, ValueError):
        return None
    # fold=0 and fold=1 agree except in the repeated and the skipped hour (PEP 495).
    first, second = (local.replace(tzinfo=CENTRAL, fold=f).astimezone(UTC) for f in (0, 1))
    epoch = _unique_id_epoch(unique_id)
    if epoch is not None and first != second:
        nearest = min((first, second), key=lambda instant: abs(instant - epoch))
        if abs(nearest - epoch) <= EPOCH_TOLERANCE:
            return nearest
    return first
