"""Broker faults (rows R3 and R26): a broker restarted in the middle of a batch, and the
embedded SQLite broker and ledger under many writers at once.

The verdict is the fault suite's ``tally``; the figures (counts, drain times, publishes the
broker refused, rows the sweeper had to publish) are printed for docs/RELIABILITY.md.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from emulators.telnyx import EmulatedRecording
from ledger.models import Recording, State
from tests.e2e.stack import Stack
from tests.faults.brokers import PrivateRabbit, PrivateRedis
from tests.faults.paced import PacedTelnyxEmulator
from tests.faults.stacks import add_worker, fault_stack, verdict, wait_all_final
from tests.fixtures.callrec import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

#: Short leases so the sweeper re-drives what a broker outage strands within seconds.
FAST_RECOVERY = {
    "CALLREC_TASK_TIME_LIMIT_SECONDS": "4",
    "CALLREC_STUCK_AFTER_SECONDS": "6",
    "CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS": "10",
    "CALLREC_RELAY_INTERVAL_SECONDS": "0.1",
}

_SWEPT = re.compile(r"sweeper published (\d+) ledger rows")
_PUBLISH_FAILED = re.compile(r"publish failed \((\w+)\)")


def _stored(stack: Stack) -> int:
    with stack.sessions() as session:
        return int(
            session.execute(
                select(func.count()).select_from(Recording).where(Recording.state == State.STORED)
            ).scalar_one()
        )


def _swept_rows(stack: Stack) -> int:
    """Rows the sweeper published (the relay's publish was refused, lost or never made)."""
    return sum(int(n) for p in stack.processes for n in _SWEPT.findall(p.log()))


def _refused_publishes(stack: Stack) -> int:
    """Publishes that raised (the relay or a worker left the rows to a later round)."""
    return sum(len(_PUBLISH_FAILED.findall(p.log())) for p in stack.processes)


def _announce_all(stack: Stack, recs: list[EmulatedRecording], threads: int = 1) -> None:
    """Send every webhook (2xx each), from ``threads`` senders at once."""
    pending = iter(recs)
    lock = threading.Lock()
    failures: list[BaseException] = []

    def sender() -> None:
        while True:
            with lock:
                rec = next(pending, None)
            if rec is None:
                return
            try:
                stack.announce(rec)
            except BaseException as exc:  # reported in the test's thread
                failures.append(exc)
                return

    workers = [threading.Thread(target=sender) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    assert not failures, failures[0]
    assert not any(thread.is_alive() for thread in workers)


# -- R3: broker restart during a batch -----------------------------------------------------------


class _Outage:
    """How a broker goes down and comes back: ``down()``, then ``up()``."""

    def __init__(self, url: str, down: Callable[[], object], up: Callable[[], object]) -> None:
        self.url, self.down, self.up = url, down, up


@contextlib.contextmanager
def _redis_outage(tmp_path: Path) -> Iterator[_Outage]:
    redis = PrivateRedis(tmp_path / "redis").start()
    try:
        yield _Outage(redis.url, redis.kill, redis.start)  # kill -9, same port and AOF
    finally:
        redis.stop()


@contextlib.contextmanager
def _rabbit_outage(tmp_path: Path) -> Iterator[_Outage]:
    rabbit = PrivateRabbit(tmp_path / "rabbit").start()
    try:
        yield _Outage(rabbit.url, rabbit.stop_app, rabbit.start_app)
    finally:
        rabbit.stop()


BATCH = 120


@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_r03_broker_restarted_mid_batch_loses_nothing(
    broker: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A private broker (Redis: AOF ``everysec``, ``kill -9`` and restart on the same port
    and data; RabbitMQ: a node of our own, ``rabbitmqctl stop_app``/``start_app``) goes down
    once a third of a 120-recording batch is stored. The same worker, relay and beat
    processes reconnect on their own; what the outage stranded (messages lost with the last
    second of AOF, tasks cancelled on connection loss, publishes refused) comes back through
    Redis redelivery or the ledger sweeper. 0 lost, 0 duplicate objects."""
    outage_of = _redis_outage if broker == "redis" else _rabbit_outage
    emulator = PacedTelnyxEmulator(bytes_per_second=64_000, url_ttl_seconds=600)
    with (
        outage_of(tmp_path) as outage,
        fault_stack(
            request,
            tmp_path,
            "embedded",
            broker_url=outage.url,
            emulator=emulator,
            beat=True,
            concurrency=4,
            **FAST_RECOVERY,
        ) as stack,
    ):
        pids = [p.pid for p in stack.processes]
        recs = [emulator.add_recording(size=16_000) for _ in range(BATCH)]
        sender = threading.Thread(target=_announce_all, args=(stack, recs))
        sender.start()
        wait_for(lambda: _stored(stack) >= BATCH // 3, 90, 0.1, "a third of the batch stored")
        outage.down()
        down_at, stored_at_outage = time.monotonic(), _stored(stack)
        time.sleep(1)  # the outage itself
        outage.up()
        up_at = time.monotonic()
        sender.join(120)
        wait_all_final(stack, [rec.id for rec in recs], timeout=90)
        drained = time.monotonic() - up_at
        result = verdict(stack, recs)
        print(
            f"R3 {broker}: {BATCH} recordings, broker down at {stored_at_outage} stored for "
            f"{up_at - down_at:.1f}s, drained {drained:.1f}s after it came back; "
            f"sweeper published {_swept_rows(stack)} rows, {_refused_publishes(stack)} "
            "publishes refused"
        )
        result.assert_clean()
        assert [p.pid for p in stack.processes] == pids
        assert all(p.alive() for p in stack.processes)  # reconnected, not restarted


# -- R26: SQLite contention on the embedded default ----------------------------------------------

WEBHOOKS = 200


def test_r26_sqlite_contention_loses_no_publish(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The embedded default under contention: 2 workers x concurrency 2, the relay, beat and
    the web app (8 concurrent senders) all write the SQLite ledger and the SQLite broker at
    once for 200 webhooks. Every accepted row (the inbox) ends stored; a publish refused
    with ``database is locked`` stays unpublished in the ledger and is published again."""
    # The sandbox's leases (STUCK_AFTER 25 s): with a few seconds, rows merely waiting in a
    # deep queue would count as lost and be re-published, which is not what R26 measures.
    with fault_stack(request, tmp_path, "embedded", beat=True) as stack:
        add_worker(stack, tmp_path / "second")
        recs = [stack.emulator.add_recording(size=4_000) for _ in range(WEBHOOKS)]
        started = time.monotonic()
        _announce_all(stack, recs, threads=8)
        accepted = time.monotonic() - started
        wait_all_final(stack, [rec.id for rec in recs], timeout=120)
        drained = time.monotonic() - started
        result = verdict(stack, recs)
        with stack.sessions() as session:
            inbox = int(session.execute(select(func.count()).select_from(Recording)).scalar_one())
        print(
            f"R26: {WEBHOOKS} webhooks accepted in {accepted:.1f}s, all stored {drained:.1f}s "
            f"after the first; inbox {inbox} rows, stored {result.stored}; "
            f"{_refused_publishes(stack)} publishes refused, sweeper published "
            f"{_swept_rows(stack)} rows"
        )
        result.assert_clean()
        assert inbox == result.stored == WEBHOOKS
