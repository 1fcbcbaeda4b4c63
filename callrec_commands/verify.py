"""``callrec verify``: the ledger against the storage, for a range, streamed.

Two passes, each in bounded memory:

1. ledger → storage: every ``stored`` row of the range (keyset pages of ids) must have its
   object, of the ledger's size and sha256 (read back and hashed), and its ``.json`` record,
   whose size and sha256 agree;
2. storage → ledger: every object listed under the provider/account prefix and written in the
   range must belong to a ledger row — found by the unique (provider, account, recording key)
   index, the key's id being decoded back from its percent-encoding (hashed ``h-…`` ids by a
   prefix match of ``storage_key`` within the account). Objects of rows still in flight
   (accepted, fetching, retrying) are not extra: their capture has not finished.

The range is on when the recording was stored: ``stored_at`` for rows, the write time for
objects.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from urllib.parse import unquote_to_bytes

import click
from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from callrec_commands.common import Counter, ledger_sessions, optional_moment, settings
from ledger.models import FINAL_STATES, Recording, State
from storage import ObjectStat, Storage, metadata_key, recording_key

__all__ = ["Problem", "Scope", "ledger_problems", "storage_problems", "verify"]

_BATCH = 200


@dataclass(frozen=True)
class Problem:
    kind: str  # missing | size | sha256 | metadata | extra
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind:<9} {self.key}  {self.detail}"


@dataclass(frozen=True)
class Scope:
    provider: str | None = None
    account: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def prefix(self) -> str:
        if self.provider is None:
            return ""
        return f"{self.provider}/" + (f"{self.account}/" if self.account else "")

    def holds(self, moment: datetime | None) -> bool:
        if moment is None:
            return self.since is None and self.until is None
        return (self.since is None or moment >= self.since) and (
            self.until is None or moment < self.until
        )


def _stored_query(scope: Scope) -> Select[Recording]:
    query = select(Recording).where(Recording.state == State.STORED)
    if scope.provider is not None:
        query = query.where(Recording.provider == scope.provider)
    if scope.account is not None:
        query = query.where(Recording.account == scope.account)
    if scope.since is not None:
        query = query.where(Recording.stored_at >= scope.since)
    if scope.until is not None:
        query = query.where(Recording.stored_at < scope.until)
    return query


def count_stored(sessions: sessionmaker[Session], scope: Scope) -> int:
    query = _stored_query(scope)
    with sessions() as session:
        return int(session.execute(select(func.count()).select_from(query.subquery())).scalar_one())


def ledger_problems(
    sessions: sessionmaker[Session],
    storage: Storage,
    scope: Scope,
    on_row: Callable[[], None] = lambda: None,
) -> Iterator[Problem]:
    """Pass 1: each stored row of the range against its object and metadata record."""
    after = 0
    while True:
        query = _stored_query(scope)
        with sessions() as session:
            rows = list(
                session.execute(
                    query.where(Recording.id > after).order_by(Recording.id).limit(_BATCH)
                ).scalars()
            )
        if not rows:
            return
        after = rows[-1].id
        for row in rows:
            yield from _check_row(storage, row)
            on_row()


def _check_row(storage: Storage, row: Recording) -> Iterator[Problem]:
    label = f"row {row.id} ({row.provider}/{row.account} {row.recording_key})"
    if not row.storage_key:
        yield Problem("missing", "-", f"{label} is stored but names no storage key")
        return
    stat = storage.stat(row.storage_key)
    if stat is None:
        yield Problem("missing", row.storage_key, f"{label}: no object")
        return
    problem = _object_problem(storage, row, stat.size, label)
    if problem is not None:
        yield problem
    # After an object mismatch the record (which describes the object) differs too: only
    # its presence is checked then.
    expected = None if problem else (row.size_bytes, row.sha256)
    yield from _check_record(storage, row.storage_key, label, expected)


def _object_problem(storage: Storage, row: Recording, size: int, label: str) -> Problem | None:
    key = row.storage_key or ""
    if size != row.size_bytes:
        return Problem("size", key, f"{label}: ledger {row.size_bytes}, object {size}")
    digest = hashlib.sha256()
    for chunk in storage.read(key):
        digest.update(chunk)
    if digest.hexdigest() != row.sha256:
        return Problem("sha256", key, f"{label}: ledger {row.sha256}, object {digest.hexdigest()}")
    return None


def _check_record(
    storage: Storage, key: str, label: str, expected: tuple[int | None, str | None] | None
) -> Iterator[Problem]:
    record_key = metadata_key(key)
    try:
        raw = b"".join(storage.read(record_key))
    except FileNotFoundError:
        yield Problem("metadata", record_key, f"{label}: no metadata record")
        return
    try:
        record = json.loads(raw)
    except ValueError:
        yield Problem("metadata", record_key, f"{label}: metadata record is not JSON")
        return
    if not isinstance(record, dict):
        yield Problem("metadata", record_key, f"{label}: metadata record is not an object")
    elif expected is not None and (record.get("size_bytes"), record.get("sha256")) != expected:
        yield Problem("metadata", record_key, f"{label}: record's size or sha256 disagrees")


def _batched(items: Iterable[ObjectStat], size: int) -> Iterator[list[ObjectStat]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _split(key: str) -> tuple[str, str, str, str] | None:
    """(provider, account, stem key without extension, decoded id or "" for hashed ids)."""
    parts = key.split("/")
    if len(parts) != 4:
        return None
    provider, account, _fanout, name = parts
    stem, dot, _ext = name.rpartition(".")
    if not dot or not stem:
        return None
    stem_key = key[: -len(name)] + stem
    if stem.startswith("h-"):
        return provider, account, stem_key, ""
    try:
        decoded = unquote_to_bytes(stem).decode("utf-8", errors="surrogatepass")
        if recording_key(provider, account, decoded, "x")[:-2] != stem_key:
            return None
    except (UnicodeDecodeError, ValueError):
        return None
    return provider, account, stem_key, decoded


def storage_problems(
    sessions: sessionmaker[Session],
    storage: Storage,
    scope: Scope,
    on_object: Callable[[], None] = lambda: None,
) -> Iterator[Problem]:
    """Pass 2: objects of the range that no ledger row accounts for."""

    def in_range() -> Iterator[ObjectStat]:
        for item in storage.list_objects(scope.prefix()):
            on_object()
            if scope.holds(item.modified):
                yield item

    for batch in _batched(in_range(), _BATCH):
        yield from _extras(sessions, batch)


def _extras(sessions: sessionmaker[Session], batch: list[ObjectStat]) -> Iterator[Problem]:
    parsed = {item.key: _split(item.key) for item in batch}
    by_account: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for split in parsed.values():
        if split is not None:
            by_account.setdefault((split[0], split[1]), []).append((split[2], split[3]))
    # stem key -> (state, storage key) of the row it belongs to
    rows: dict[str, tuple[str, str | None]] = {}
    with sessions() as session:
        for (provider, account), stems in by_account.items():
            ids = sorted({decoded for _stem, decoded in stems if decoded})
            hashed = sorted({stem for stem, decoded in stems if not decoded})
            match: list[ColumnElement[bool]] = [Recording.recording_key.in_(ids)] if ids else []
            match += [
                Recording.storage_key.startswith(stem + ".", autoescape=True) for stem in hashed
            ]
            found = session.execute(
                select(
                    Recording.provider,
                    Recording.account,
                    Recording.recording_key,
                    Recording.state,
                    Recording.storage_key,
                ).where(Recording.provider == provider, Recording.account == account, or_(*match))
            )
            for prov, acct, rec_key, state, storage_key in found:
                if storage_key:
                    rows[storage_key.rpartition(".")[0]] = (state, storage_key)
                try:
                    stem_key = recording_key(prov, acct, rec_key, "x")[:-2]
                except ValueError:
                    continue
                rows.setdefault(stem_key, (state, storage_key))
    for item in batch:
        split = parsed[item.key]
        if split is None:
            yield Problem("extra", item.key, "not a recording key; no ledger row can own it")
            continue
        row = rows.get(split[2])
        if row is None:
            yield Problem("extra", item.key, f"no ledger row ({item.size} bytes)")
            continue
        state, storage_key = row
        if state not in FINAL_STATES:
            continue  # a capture in flight: its row is not stored yet
        owned = storage_key is not None and item.key in (storage_key, metadata_key(storage_key))
        if state != State.STORED or not owned:
            yield Problem("extra", item.key, f"its ledger row is {state} with key {storage_key}")


@click.command()
@click.option("--provider", help="Only this provider.")
@click.option("--account", help="Only this account (with --provider).")
@click.option("--since", callback=optional_moment, help="Stored at or after (ISO 8601).")
@click.option("--until", callback=optional_moment, help="Stored before (ISO 8601).")
def verify(
    provider: str | None, account: str | None, since: datetime | None, until: datetime | None
) -> None:
    """Compare the ledger with the storage: missing, extra, size or sha256 mismatch, missing
    metadata record. Exits 1 when anything is wrong."""
    from storage import storage_from_url

    if account and not provider:
        raise click.UsageError("--account needs --provider")
    if since and until and since >= until:
        raise click.UsageError("--since must be before --until")
    loaded = settings()
    storage = storage_from_url(
        loaded.storage_url,
        s3_endpoint_url=loaded.s3_endpoint_url,
        s3_region=loaded.s3_region,
        part_size=loaded.s3_part_size_bytes,
    )
    scope = Scope(provider, account, since, until)
    problems = 0
    with ledger_sessions(loaded) as sessions:
        total = count_stored(sessions, scope)
        with click.progressbar(length=total, label="ledger rows", file=sys.stderr) as bar:
            for problem in ledger_problems(sessions, storage, scope, lambda: bar.update(1)):
                problems += 1
                click.echo(str(problem))
        listed = Counter("storage objects listed", "objects")
        for problem in storage_problems(sessions, storage, scope, listed.add):
            problems += 1
            click.echo(str(problem))
        listed.done()
    click.echo(
        f"verified {total} stored rows and {listed.count} objects in {storage.url}: "
        + (f"{problems} problem(s)" if problems else "all consistent")
    )
    if problems:
        raise SystemExit(1)
