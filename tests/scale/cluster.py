"""A scaled-out callrec on loopback: several gunicorn web processes, Celery workers laid out per
queue as docs/DEPLOY.md prescribes, two beats and two relays, all sharing one PostgreSQL ledger,
one RabbitMQ broker and one (moto) S3 bucket; the Telnyx emulator is the provider."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import httpx
from sqlalchemy import func, select

from emulators.telnyx import EmulatedRecording, TelnyxEmulator, TelnyxWebhookSigner
from ledger import Recording, RecordingEvent, make_engine, make_session_factory, migrate
from ledger.models import FINAL_STATES, AccountState
from storage import Storage, storage_from_url
from tests.e2e.stack import telnyx_env
from tests.faults.tally import Tally, tally
from tests.fixtures.callrec import (
    BEAT_READY,
    ServiceProcess,
    answers,
    settings_from,
    spawn_beat,
    spawn_gunicorn,
    spawn_worker,
    start_relay,
    wait_for,
)

#: Workers per queue (docs/DEPLOY.md, "Production layout"): name → (queue suffixes, concurrency).
WORKERS: dict[str, tuple[tuple[str, ...], int]] = {
    "worker-1": (("capture", "sweep"), 2),
    "worker-2": (("capture", "sweep"), 2),
    "worker-3": (("capture", "sweep"), 2),
    "worker-backfill": (("capture.backfill",), 2),
    "worker-poll": (("poll",), 1),
}
CAPTURE_WORKERS = ("worker-1", "worker-2", "worker-3")
WEBS = ("web-a", "web-b")
BEATS = ("beat-a", "beat-b")
RELAYS = ("relay-a", "relay-b")


def log_entries(process: ServiceProcess) -> list[dict[str, Any]]:
    """The JSON log lines of a callrec process (Celery's own text lines are skipped)."""
    entries = []
    for line in process.log().splitlines():
        if line.startswith("{"):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return entries


@dataclass
class Cluster:
    env: dict[str, str]
    emulator: TelnyxEmulator
    signer: TelnyxWebhookSigner
    storage: Storage
    sessions: Any
    s3: tuple[Any, str]
    web_urls: list[str] = field(default_factory=list)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    #: ``time.monotonic()`` when the beats started (the first poll is due then).
    beats_started: float = 0.0
    #: One pooled client for every webhook (a client per request costs an SSL context each).
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    # -- driving ----------------------------------------------------------------------------------
    def post(self, web: int, body: bytes, headers: dict[str, str]) -> httpx.Response:
        url = f"{self.web_urls[web]}/webhooks/telnyx"
        return self.http.post(url, content=body, headers=headers)

    def announce_all(
        self,
        once: Sequence[EmulatedRecording],
        twice: Sequence[EmulatedRecording],
        threads: int = 8,
    ) -> tuple[list[int], list[list[str]]]:
        """Send ``once`` alternately to each web process, and each of ``twice`` to both web
        processes at the same moment (a barrier per pair). Returns the HTTP statuses and, per
        pair, the two results (``accepted`` / ``duplicate``)."""
        statuses: list[int] = []
        pairs: list[list[str]] = [[] for _ in twice]
        lock = threading.Lock()

        def send(web: int, body: bytes, slot: int | None, gate: Any) -> None:
            headers = self.signer.headers(body)
            if gate is not None:
                gate.wait(20)
            response = self.post(web, body, headers)
            with lock:
                statuses.append(response.status_code)
                if slot is not None:
                    pairs[slot].append(response.json().get("status", "?"))

        with ThreadPoolExecutor(threads) as pool:
            futures = []
            for index, rec in enumerate(once):
                body = self.signer.recording_saved_body(rec)
                futures.append(pool.submit(send, index % len(self.web_urls), body, None, None))
                if index % 5 == 0 and index // 5 < len(twice):  # pairs spread through the run
                    slot = index // 5
                    body = self.signer.recording_saved_body(twice[slot])  # one delivery id
                    gate = threading.Barrier(2)
                    for web in (0, 1):
                        futures.append(pool.submit(send, web, body, slot, gate))
            for future in futures:
                future.result(60)
        return statuses, pairs

    # -- observing --------------------------------------------------------------------------------
    def rows(self, keys: Sequence[str]) -> list[Recording]:
        with self.sessions() as session:
            return list(
                session.execute(
                    select(Recording).where(Recording.recording_key.in_(list(keys)))
                ).scalars()
            )

    def wait_all_final(self, keys: Sequence[str], timeout: float) -> list[Recording]:
        def done() -> list[Recording] | None:
            rows = self.rows(keys)
            final = [row for row in rows if row.state in FINAL_STATES]
            return rows if len(final) == len(keys) else None

        try:
            rows: list[Recording] = wait_for(done, timeout, 0.5, f"{len(keys)} to be final")
            return rows
        except BaseException:
            for name, process in self.processes.items():
                print(f"--- {name} ---\n{process.log_tail(30)}")
            raise

    def events_per_row(self, ids: Sequence[int], state: str) -> Counter[int]:
        """How many ``recording_events`` of ``state`` each row has (the ledger's history)."""
        with self.sessions() as session:
            counted = session.execute(
                select(RecordingEvent.recording_id, func.count())
                .where(RecordingEvent.recording_id.in_(list(ids)), RecordingEvent.state == state)
                .group_by(RecordingEvent.recording_id)
            ).all()
        return Counter({row_id: count for row_id, count in counted})

    def wait_poll_started(self, after: datetime, timeout: float = 30) -> None:
        """Block until a poll of telnyx/default starts after ``after``."""

        def started() -> bool:
            with self.sessions() as session:
                at = session.execute(
                    select(AccountState.last_poll_started_at).where(
                        AccountState.provider == "telnyx", AccountState.account == "default"
                    )
                ).scalar_one_or_none()
            return at is not None and at > after

        wait_for(started, timeout, 0.05, "a poll to start")

    def tally(self, recordings: Sequence[EmulatedRecording]) -> Tally:
        sent = {rec.id: rec.audio("mp3").sha256() for rec in recordings}
        return tally(self.sessions, self.storage, sent, s3=self.s3)

    def stored_by(self, name: str) -> list[int]:
        """Ledger ids that worker ``name`` stored (its ``stored … bytes`` log lines)."""
        return [
            int(entry["recording"])
            for entry in log_entries(self.processes[name])
            if entry.get("msg", "").startswith("stored ") and "recording" in entry
        ]

    def tasks_received(self, names: Sequence[str], task: str) -> int:
        """How many ``task`` messages the named workers received (Celery's INFO line)."""
        marker = f"Task {task}["
        return sum(
            1
            for name in names
            for line in self.processes[name].log().splitlines()
            if marker in line and "] received" in line
        )

    def beat_sent(self, name: str, entry: str) -> int:
        """How many times beat ``name`` sent its schedule ``entry``."""
        return self.processes[name].log().count(f"Sending due task {entry} ")


def start_cluster(tmp: Path, env: dict[str, str]) -> Iterator[Cluster]:
    """Start everything (processes in parallel), yield the cluster, stop everything."""
    emulator = TelnyxEmulator(url_ttl_seconds=600).start()
    signer = TelnyxWebhookSigner()
    env = telnyx_env(
        tmp,
        emulator,
        signer,
        CALLREC_POLL_INTERVAL_SECONDS="10",  # beat ticks every 2 s; one poll per 10 s
        # Sweeps every 2 s from each beat; a row waits 4 s for a relay or poll to publish it.
        CALLREC_SWEEP_INTERVAL_SECONDS="2",
        **env,
    )
    settings = settings_from(env)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    bucket = settings.storage_url.removeprefix("s3://").split("/", 1)[0]
    cluster = Cluster(
        env=env,
        emulator=emulator,
        signer=signer,
        storage=storage_from_url(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url),
        sessions=make_session_factory(engine),
        s3=(boto3.client("s3", endpoint_url=settings.s3_endpoint_url), bucket),
    )
    prefix = settings.queue_prefix
    try:
        for name, (queues, concurrency) in WORKERS.items():
            cluster.processes[name] = spawn_worker(
                env, tmp, concurrency, name=name, queues=[f"{prefix}.{q}" for q in queues]
            )
        for name in WEBS:
            web, url = spawn_gunicorn(env, tmp, name=name, workers=1, threads=4)
            cluster.processes[name] = web
            cluster.web_urls.append(url)
        for name in RELAYS:
            cluster.processes[name] = start_relay(env, tmp, name)
        for name in WORKERS:
            cluster.processes[name].wait_ready("ready", timeout=90)
        for url in cluster.web_urls:
            wait_for(partial(answers, f"{url}/healthz"), 60, 0.2, f"{url} to answer")
        cluster.beats_started = time.monotonic()
        for name in BEATS:  # last: polls start once everything is up
            cluster.processes[name] = spawn_beat(env, tmp, name)
        for name in BEATS:
            cluster.processes[name].wait_ready(BEAT_READY)
        yield cluster
    finally:
        for process in cluster.processes.values():  # all at once: each stop waits for its exit
            process.send_signal(signal.SIGTERM)
        for process in cluster.processes.values():
            process.stop()
        emulator.stop()
        engine.dispose()
        cluster.http.close()
