"""Every fault at once (issue 6's combined run and soak): one driver for the CI test
(``test_chaos.py``) and ``bench/soak.py``.

A real stack (``tests.e2e.stack``): a PostgreSQL ledger (a fresh database), a private broker
the driver restarts (``brokers.py``), moto S3 behind the fault proxy (``proxy.py``), the Telnyx
emulator serving random bytes, the web app, relay, beat and N workers. A sender thread announces
the recordings at a steady rate (a few sent twice, a few never announced so only the
reconciler's list polls find them, a few removed from the emulator first so they must end
``failed`` with a reason); a fault thread meanwhile SIGKILLs pool children (preferably one
streaming a recording, ``processes.py``), SIGKILLs whole workers (a new one is started each
time), restarts the broker and blackholes S3. Then it waits (bounded) for the ledger to drain
and takes the fault suite's verdict (``tally.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from sqlalchemy import func, select

from emulators.telnyx import EmulatedRecording
from ledger.models import Recording, State
from storage import Storage, storage_from_url
from tests.e2e.stack import Stack, start_stack
from tests.faults.brokers import PrivateRabbit, PrivateRedis
from tests.faults.paced import PacedTelnyxEmulator
from tests.faults.processes import children, pid_holding
from tests.faults.proxy import FaultProxy
from tests.faults.stacks import add_worker, kill_stack
from tests.faults.tally import Tally, open_multipart_uploads, tally
from tests.fixtures.callrec import spawn_worker

__all__ = ["ChaosPlan", "ChaosReport", "SizeBand", "run_chaos"]

KiB = 1024
MiB = 1024 * KiB

Log = Callable[[str], None]


@dataclass(frozen=True)
class SizeBand:
    """Recording sizes drawn log-uniformly in ``[low, high]``, chosen with ``weight``."""

    low: int
    high: int
    weight: float = 1.0

    def draw(self, rng: random.Random) -> int:
        if self.low >= self.high:
            return self.low
        return int(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))


@dataclass
class ChaosPlan:
    """What to send and which faults to inject; ``settings`` are the stack's CALLREC_* timings."""

    recordings: int
    sizes: tuple[SizeBand, ...]
    rate: float  # webhooks per second (the send phase lasts recordings / rate)
    broker: str = "redis"  # or "rabbitmq"
    poll_only: float = 0.01  # announced only through the list API
    twice: float = 0.01  # webhooks sent twice
    gone: float = 0.005  # removed from the emulator before the webhook: must end failed
    child_kill_every: float = 2.0
    child_kills: int = 30  # at least this many (kills go on every interval while sending)
    main_kills: int = 3
    broker_restarts: int = 2
    broker_down_seconds: float = 2.0
    s3_outage_seconds: float = 60.0
    workers: int = 2
    concurrency: int = 2
    #: Bytes per second of each audio body (None: unpaced): downloads take long enough that
    #: a pool-child kill often lands mid-download.
    download_rate: float | None = 8 * MiB
    drain_margin: float = (
        180.0  # the drain deadline: visibility timeout + this after the last fault
    )
    seed: int = 0
    settings: dict[str, str] = field(default_factory=dict)

    def count(self, fraction: float) -> int:
        """How many recordings get a treatment of ``fraction`` (at least one when asked for)."""
        return min(self.recordings, math.ceil(self.recordings * fraction)) if fraction else 0

    @property
    def visibility_timeout(self) -> float:
        return float(self.settings.get("CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS", "900"))


@dataclass
class ChaosReport:
    """The run's figures: the tally, faults actually injected, traffic, drain."""

    tally: Tally
    faults: Counter[str]
    traffic: Counter[str]
    drained: bool
    drain_seconds: float  # from the last fault to every row final and no upload open
    drain_deadline: float
    captures: int
    repeated_captures: int  # rows whose capture ran more than once (attempts > 1)
    max_attempts: int
    total_bytes: int
    run_seconds: float

    @property
    def duplicate_execution_rate(self) -> float:
        return self.repeated_captures / self.captures if self.captures else 0.0

    def lines(self) -> list[str]:
        faults = " ".join(f"{name}={n}" for name, n in sorted(self.faults.items()))
        traffic = " ".join(f"{name}={n}" for name, n in sorted(self.traffic.items()))
        drain = "drained" if self.drained else "NOT DRAINED"
        return [
            self.tally.line(),
            f"faults: {faults}",
            f"traffic: {traffic} bytes={self.total_bytes / MiB:.0f}MiB",
            f"{drain} {self.drain_seconds:.1f}s after the last fault "
            f"(deadline {self.drain_deadline:.0f}s); run {self.run_seconds:.0f}s",
            f"duplicate-execution rate {self.duplicate_execution_rate:.2%} "
            f"({self.repeated_captures} of {self.captures} captures ran more than once; "
            f"most attempts of a row {self.max_attempts})",
        ]

    @property
    def clean(self) -> bool:
        return self.tally.clean and self.drained

    def assert_clean(self) -> None:
        assert self.drained, "\n".join(self.lines())
        self.tally.assert_clean()


# -- the stack ---------------------------------------------------------------------------------


@dataclass
class _Broker:
    url: str
    down: Callable[[], object]
    up: Callable[[], object]

    def restart(self, down_seconds: float) -> None:
        self.down()
        time.sleep(down_seconds)
        self.up()


@contextlib.contextmanager
def _private_broker(kind: str, folder: Path) -> Iterator[_Broker]:
    """A broker of the run's own: Redis ``kill -9`` + start (AOF), or RabbitMQ stop/start_app."""
    server: PrivateRedis | PrivateRabbit
    if kind == "redis":
        server = PrivateRedis(folder / "redis").start()
        broker = _Broker(server.url, server.kill, server.start)
    elif kind == "rabbitmq":
        server = PrivateRabbit(folder / "rabbit").start()
        broker = _Broker(server.url, server.stop_app, server.start_app)
    else:
        raise ValueError(f"unknown broker {kind!r}")
    try:
        yield broker
    finally:
        server.stop()


@dataclass
class _Bucket:
    client: Any
    name: str
    direct: Storage  # reaches moto without the proxy, for the verdict


@contextlib.contextmanager
def _bucket(endpoint: str) -> Iterator[_Bucket]:
    """A new bucket on moto, emptied and dropped afterwards (moto keeps objects in memory)."""
    name = f"callrec-chaos-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=name)
    direct = storage_from_url(
        f"s3://{name}/recordings", s3_endpoint_url=endpoint, s3_region="us-east-1"
    )
    try:
        yield _Bucket(client, name, direct)
    finally:
        with contextlib.suppress(Exception):
            for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    client.delete_objects(Bucket=name, Delete={"Objects": keys})
            client.delete_bucket(Bucket=name)


# -- the recordings ----------------------------------------------------------------------------


@dataclass
class _Item:
    size: int
    kind: str  # "webhook", "poll-only" or "gone"
    twice: bool = False
    rec: EmulatedRecording | None = None


def _items(plan: ChaosPlan, rng: random.Random) -> list[_Item]:
    """The recordings to send, in order; treatments spread at random over the run."""
    bands = list(plan.sizes)
    weights = [band.weight for band in bands]
    items = [
        _Item(rng.choices(bands, weights)[0].draw(rng), "webhook") for _ in range(plan.recordings)
    ]
    order = rng.sample(range(plan.recordings), plan.recordings)
    poll_only, gone = plan.count(plan.poll_only), plan.count(plan.gone)
    for index in order[:poll_only]:
        items[index].kind = "poll-only"
    for index in order[poll_only : poll_only + gone]:
        items[index].kind = "gone"
    announced = [i for i in order if items[i].kind == "webhook"]
    for index in announced[: plan.count(plan.twice)]:
        items[index].twice = True
    return items


class _Sender(threading.Thread):
    """Announces the items at ``plan.rate`` per second; a twice-sent webhook goes again a
    few seconds later (same bytes, as a provider's retry). Non-2xx answers are retried."""

    def __init__(self, stack: Stack, items: list[_Item], plan: ChaosPlan, rng: random.Random):
        super().__init__(name="chaos-sender", daemon=True)
        self.stack, self.items, self.plan, self.rng = stack, items, plan, rng
        self.traffic: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        try:
            self._send_all()
        except BaseException as exc:  # reported by the driver
            self.error = exc

    def _post(self, body: bytes) -> None:
        for _ in range(30):
            try:
                if self.stack.send(body).status_code == 200:
                    self.traffic["webhooks"] += 1
                    return
            except httpx.TransportError:
                pass
            self.traffic["webhook-retries"] += 1
            time.sleep(1)
        raise RuntimeError("a webhook was refused 30 times")

    def _send_all(self) -> None:
        emulator = self.stack.emulator
        resend: list[tuple[float, bytes]] = []
        started = time.monotonic()
        for index, item in enumerate(self.items):
            due = started + index / self.plan.rate
            while (wait := due - time.monotonic()) > 0 or (resend and resend[0][0] <= due):
                if resend and resend[0][0] <= time.monotonic():
                    self._post(resend.pop(0)[1])
                    self.traffic["sent-twice"] += 1
                elif wait > 0:
                    self.stop_event.wait(min(wait, 0.05))
                if self.stop_event.is_set():
                    return
            item.rec = emulator.add_recording(size=item.size, seed=f"{self.plan.seed}-{index}")
            self.traffic[item.kind] += 1
            if item.kind == "poll-only":
                continue
            body = self.stack.signer.recording_saved_body(item.rec)
            if item.kind == "gone":
                emulator.remove_recording(item.rec.id)
            self._post(body)
            if item.twice:
                resend.append((time.monotonic() + self.rng.uniform(1, 5), body))
        for _, body in resend:
            self._post(body)
            self.traffic["sent-twice"] += 1


# -- the faults --------------------------------------------------------------------------------


class _Faults(threading.Thread):
    """Runs the fault schedule over the send phase (``send_seconds``); counts what it did."""

    def __init__(
        self,
        stack: Stack,
        workers: list[Any],
        broker: _Broker,
        proxy: FaultProxy,
        plan: ChaosPlan,
        send_seconds: float,
        rng: random.Random,
        folder: Path,
        log: Log,
    ) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.stack, self.workers, self.broker, self.proxy = stack, workers, broker, proxy
        self.plan, self.rng, self.folder, self.log = plan, rng, folder, log
        self.counts: Counter[str] = Counter()
        self.error: BaseException | None = None
        self.last_fault = time.monotonic()
        self.stop_event = threading.Event()
        self.schedule = self._schedule(send_seconds)

    def _schedule(self, span: float) -> list[tuple[float, str]]:
        plan = self.plan
        events: list[tuple[float, str]] = []
        kills = max(plan.child_kills, int(span / plan.child_kill_every))
        events += [((k + 1) * plan.child_kill_every, "child") for k in range(kills)]
        events += [(span * (k + 1) / (plan.main_kills + 1), "main") for k in range(plan.main_kills)]
        restarts = plan.broker_restarts
        events += [(span * ((k + 1) / (restarts + 1) + 0.12), "broker") for k in range(restarts)]
        if plan.s3_outage_seconds > 0:
            events += [(span * 0.3, "s3-down"), (span * 0.3 + plan.s3_outage_seconds, "s3-up")]
        return sorted(events)

    def run(self) -> None:
        started = time.monotonic()
        try:
            for at, what in self.schedule:
                if self.stop_event.wait(max(0.0, started + at - time.monotonic())):
                    break
                getattr(self, f"_{what.replace('-', '_')}")()
                self.last_fault = time.monotonic()
        except BaseException as exc:  # reported by the driver
            self.error = exc
        finally:
            if self.proxy.mode != "pass":
                self.proxy.pass_through()

    def _live_workers(self) -> list[Any]:
        return [worker for worker in self.workers if worker.alive()]

    def _child(self) -> None:
        """SIGKILL one pool child: one streaming a recording when there is one."""
        pool = {pid: w for w in self._live_workers() for pid in children(w.pid)}
        streams = [s for s in self.stack.emulator.streams() if not s.finished]  # type: ignore[attr-defined]
        self.rng.shuffle(streams)
        for stream in streams[:20]:
            pid = pid_holding(stream.client_port, pool)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    self.counts["child-kills"] += 1
                    self.counts["child-kills-mid-download"] += 1
                return
        if pool:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.rng.choice(sorted(pool)), signal.SIGKILL)
                self.counts["child-kills"] += 1

    def _main(self) -> None:
        """SIGKILL a whole worker (main process and pool), then start a new one."""
        live = self._live_workers()
        if not live:
            return
        victim = self.rng.choice(live)
        os.killpg(victim.pid, signal.SIGKILL)
        victim.process.wait(10)
        self.counts["main-kills"] += 1
        self.log(f"chaos: worker {victim.pid} SIGKILLed, starting a new one")
        # Not waiting for "ready": a worker started during the S3 outage logs it only once
        # its start-up clean-up (a multipart listing) gets an answer from S3.
        folder = self.folder / f"worker-{len(self.workers) + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        worker = spawn_worker(self.stack.env, folder, self.plan.concurrency)
        self.stack.processes.append(worker)
        self.workers.append(worker)

    def _broker(self) -> None:
        self.log("chaos: broker restart")
        self.broker.restart(self.plan.broker_down_seconds)
        self.counts["broker-restarts"] += 1

    def _s3_down(self) -> None:
        self.log(f"chaos: S3 blackholed for {self.plan.s3_outage_seconds:g}s")
        self.proxy.blackhole()
        self.counts["s3-outages"] += 1

    def _s3_up(self) -> None:
        self.proxy.pass_through()
        self.log("chaos: S3 back")


# -- the run -----------------------------------------------------------------------------------


def _states(stack: Stack) -> Counter[str]:
    with stack.sessions() as session:
        rows = session.execute(
            select(Recording.state, func.count()).group_by(Recording.state)
        ).all()
    return Counter({state: int(n) for state, n in rows})


def _attempts(stack: Stack) -> tuple[int, int, int]:
    """Captures (stored rows), rows that ran more than once, most attempts of a row."""
    with stack.sessions() as session:
        stored = session.execute(
            select(func.count()).where(Recording.state == State.STORED)
        ).scalar_one()
        repeated = session.execute(select(func.count()).where(Recording.attempts > 1)).scalar_one()
        most = session.execute(select(func.max(Recording.attempts))).scalar_one()
    return int(stored), int(repeated), int(most or 0)


def _wait_drained(stack: Stack, bucket: _Bucket, expected: int, deadline: float, log: Log) -> bool:
    """Until every expected row is final and no multipart upload is open (or the deadline)."""
    last_print = 0.0
    while True:
        states = _states(stack)
        final = states[State.STORED] + states[State.FAILED]
        uploads = open_multipart_uploads(bucket.client, bucket.name)
        if final >= expected and uploads == 0:
            return True
        now = time.monotonic()
        if now > deadline:
            log(f"chaos: NOT drained: {dict(states)}, {uploads} open uploads")
            return False
        if now - last_print > 15:
            log(f"chaos: waiting: {dict(states)} of {expected}, {uploads} open uploads")
            last_print = now
        time.sleep(1)


def run_chaos(
    plan: ChaosPlan, folder: Path, database_url: str, s3_endpoint: str, log: Log = print
) -> ChaosReport:
    """Run ``plan`` on a new stack in ``folder`` (ledger ``database_url``, an empty database;
    S3 on moto at ``s3_endpoint``); everything started here is stopped here."""
    rng = random.Random(plan.seed)
    begun = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        broker = cleanup.enter_context(_private_broker(plan.broker, folder))
        bucket = cleanup.enter_context(_bucket(s3_endpoint))
        host, _, port = s3_endpoint.rpartition("/")[2].partition(":")
        proxy = cleanup.enter_context(FaultProxy(host, int(port)))
        emulator = PacedTelnyxEmulator(bytes_per_second=plan.download_rate, url_ttl_seconds=600)
        stack = start_stack(
            folder,
            beat=True,
            emulator=emulator,
            concurrency=plan.concurrency,
            CALLREC_DATABASE_URL=database_url,
            CALLREC_BROKER_URL=broker.url,
            CALLREC_STORAGE_URL=f"s3://{bucket.name}/recordings",
            CALLREC_S3_ENDPOINT_URL=proxy.url("http"),
            CALLREC_S3_PART_SIZE_BYTES=str(5 * MiB),
            **plan.settings,
        )
        cleanup.callback(kill_stack, stack)
        workers = [stack.processes[0]]
        for k in range(1, plan.workers):
            workers.append(add_worker(stack, folder / f"worker-{k + 1}", plan.concurrency))
        items = _items(plan, rng)
        send_seconds = plan.recordings / plan.rate
        sender = _Sender(stack, items, plan, random.Random(rng.random()))
        faults = _Faults(stack, workers, broker, proxy, plan, send_seconds, rng, folder, log)
        log(
            f"chaos: {plan.recordings} recordings over {send_seconds:.0f}s, "
            f"{len(faults.schedule)} faults scheduled, broker {plan.broker}"
        )
        sender.start()
        faults.start()
        try:
            sender.join(send_seconds * 3 + 600)
            faults.join(send_seconds + plan.s3_outage_seconds + 600)
        finally:
            sender.stop_event.set()
            faults.stop_event.set()
        for thread in (sender, faults):
            if thread.error is not None:
                raise thread.error
        last_fault = faults.last_fault
        drain_deadline = plan.visibility_timeout + plan.drain_margin
        drained = _wait_drained(stack, bucket, plan.recordings, last_fault + drain_deadline, log)
        drain_seconds = time.monotonic() - last_fault
        sent = {
            item.rec.id: None if item.kind == "gone" else item.rec.audio("mp3").sha256()
            for item in items
            if item.rec is not None
        }
        result = tally(stack.sessions, bucket.direct, sent, s3=(bucket.client, bucket.name))
        captures, repeated, most = _attempts(stack)
        return ChaosReport(
            tally=result,
            faults=faults.counts,
            traffic=sender.traffic,
            drained=drained,
            drain_seconds=drain_seconds,
            drain_deadline=drain_deadline,
            captures=captures,
            repeated_captures=repeated,
            max_attempts=most,
            total_bytes=sum(item.size for item in items),
            run_seconds=time.monotonic() - begun,
        )
    raise AssertionError("unreachable")  # pragma: no cover
