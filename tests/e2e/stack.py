"""A whole callrec on loopback: Telnyx emulator, web app over HTTP, a real Celery worker
process (and beat when asked), the ledger and storage of one configuration."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import boto3
import httpx
import pytest
from sqlalchemy import select

from bench.common import drop_broker_state
from emulators.base import Emulator
from emulators.server import LoopbackServer
from emulators.telnyx import EmulatedRecording, TelnyxEmulator, TelnyxWebhookSigner
from ingest.app import create_app
from ledger import Recording, make_engine, make_session_factory, migrate
from storage import Storage, metadata_key, recording_key, storage_from_url
from tests.fixtures.callrec import (
    REPO,
    ServiceProcess,
    base_env,
    settings_from,
    start_beat,
    start_relay,
    start_worker,
    wait_for,
)
from tests.fixtures.servers import (
    RABBITMQ_URL,
    REDIS_URL,
    fresh_postgres_database,
    require_server,
)

T = TypeVar("T")


@dataclass
class Stack:
    env: dict[str, str]
    emulator: TelnyxEmulator
    signer: TelnyxWebhookSigner
    web_url: str
    storage: Storage
    sessions: Any
    processes: list[ServiceProcess] = field(default_factory=list)
    _closers: list[Any] = field(default_factory=list)

    # -- driving ----------------------------------------------------------------------------------
    def send(self, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.web_url}/webhooks/telnyx",
            content=body,
            headers=headers or self.signer.headers(body),
            timeout=20,
        )

    def announce(self, rec: EmulatedRecording, **kwargs: Any) -> httpx.Response:
        body = self.signer.recording_saved_body(rec, **kwargs)
        response = self.send(body)
        assert response.status_code == 200, response.text
        return response

    def send_concurrently(self, body: bytes, copies: int) -> list[int]:
        headers = self.signer.headers(body)
        statuses: list[int] = []
        lock = threading.Lock()

        def one() -> None:
            status = self.send(body, headers).status_code
            with lock:
                statuses.append(status)

        threads = [threading.Thread(target=one) for _ in range(copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return statuses

    # -- observing --------------------------------------------------------------------------------
    def row(self, key: str) -> Recording | None:
        with self.sessions() as session:
            return session.execute(
                select(Recording).where(Recording.recording_key == key)
            ).scalar_one_or_none()

    def rows(self) -> list[Recording]:
        with self.sessions() as session:
            return list(session.execute(select(Recording).order_by(Recording.id)).scalars())

    def wait_final(
        self, key: str, timeout: float = 45, states: Collection[str] = ("stored", "failed")
    ) -> Recording:
        def final() -> Recording | None:
            row = self.row(key)
            return row if row is not None and row.state in states else None

        try:
            return wait_for(final, timeout, 0.2, f"recording {key} to be in {sorted(states)}")  # type: ignore[no-any-return]
        except BaseException:
            for process in self.processes:
                print(f"--- {process.log_path.name} ---\n{process.log()[-6000:]}")
            raise

    def stored_bytes_sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        for chunk in self.storage.read(key):
            digest.update(chunk)
        return digest.hexdigest()

    def metadata(self, key: str) -> dict[str, Any]:
        return json.loads(b"".join(self.storage.read(metadata_key(key))))  # type: ignore[no-any-return]

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for closer in reversed(self._closers):
            closer()


def ago(**delta: float) -> datetime:
    """Now (UTC) minus ``timedelta(**delta)``."""
    return datetime.now(UTC) - timedelta(**delta)


def audio_key(rec: EmulatedRecording, fmt: str = "mp3") -> str:
    return recording_key("telnyx", "default", rec.id, fmt)


def backfill(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """``callrec backfill --provider telnyx <args>`` as its own process, on the stack's settings."""
    return subprocess.run(
        [sys.executable, "-m", "callrec_cli", "backfill", "--provider", "telnyx", *args],
        env={**os.environ, **stack.env, "PYTHONPATH": str(REPO)},
        cwd=stack.processes[0].log_path.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def server_env(kind: str, request: pytest.FixtureRequest, database: str) -> dict[str, str]:
    """Settings for a server stack (``…-redis-…`` or ``…-rabbitmq-…``) with a new S3 bucket and
    its own queue prefix, whose queues (or Redis keys) ``request``'s teardown removes."""
    broker = REDIS_URL if "redis" in kind else RABBITMQ_URL
    require_server("Redis" if "redis" in kind else "RabbitMQ", broker)
    endpoint = request.getfixturevalue("moto_server")
    bucket = f"callrec-e2e-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    request.addfinalizer(functools.partial(drop_broker_state, broker, prefix))
    return {
        "CALLREC_DATABASE_URL": database,
        "CALLREC_BROKER_URL": broker,
        "CALLREC_QUEUE_PREFIX": prefix,
        "CALLREC_STORAGE_URL": f"s3://{bucket}/recordings",
        "CALLREC_S3_ENDPOINT_URL": endpoint,
    }


def telnyx_env(
    tmp_path: Path, emulator: TelnyxEmulator, signer: TelnyxWebhookSigner, **overrides: str
) -> dict[str, str]:
    """Settings for a callrec in ``tmp_path`` whose Telnyx default account is the emulator."""
    return base_env(
        tmp_path,
        CALLREC_TELNYX_PUBLIC_KEY=signer.public_key_b64,
        CALLREC_TELNYX_API_KEY=emulator.api_key,
        CALLREC_TELNYX_API_BASE=emulator.base_url,
        CALLREC_TELNYX_AUDIO_HOSTS=emulator.audio_host,
        **overrides,
    )


def start_stack(
    tmp_path: Path,
    *,
    beat: bool = False,
    relay: bool = True,
    emulator: TelnyxEmulator | None = None,
    concurrency: int = 2,
    worker_preexec: Callable[[], None] | None = None,
    **overrides: str,
) -> Stack:
    """A stack around ``emulator`` (default: a new ``TelnyxEmulator``), started and stopped
    here; ``worker_preexec`` runs in the worker process before it execs."""
    emulator = (emulator or TelnyxEmulator(url_ttl_seconds=600)).start()
    signer = TelnyxWebhookSigner()
    env = telnyx_env(tmp_path, emulator, signer, **overrides)
    settings = settings_from(env)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    storage = storage_from_url(
        settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region
    )
    stack = Stack(
        env=env,
        emulator=emulator,
        signer=signer,
        web_url="",
        storage=storage,
        sessions=make_session_factory(engine),
    )
    stack._closers.append(emulator.stop)
    stack._closers.append(engine.dispose)
    try:
        stack.processes.append(start_worker(env, tmp_path, concurrency, preexec_fn=worker_preexec))
        if relay:
            stack.processes.append(start_relay(env, tmp_path))
        if beat:
            stack.processes.append(start_beat(env, tmp_path))
        server = LoopbackServer(create_app(settings)).start()
        stack._closers.append(server.stop)
        stack.web_url = server.url
    except BaseException:
        stack.close()
        raise
    return stack


def start_stack_with(
    emulator: Emulator, tmp_path: Path, *, beat: bool = False, **overrides: str
) -> Stack:
    """``start_stack`` beside a running provider emulator, which stops with the stack (or at
    once when the stack fails to start)."""
    try:
        stack = start_stack(tmp_path, beat=beat, **overrides)
    except BaseException:
        emulator.stop()
        raise
    stack._closers.append(emulator.stop)
    return stack


def each_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    marks: Mapping[str, Sequence[pytest.MarkDecorator]],
    start: Callable[[Path, dict[str, str]], T],
    close: Callable[[T], None],
) -> Iterator[T]:
    """The body of a stack fixture parametrized over ``marks``' names: ``embedded``, or a
    server stack (``server_env``) on a new PostgreSQL database; ``start(tmp, env)`` builds it."""
    for mark in marks[request.param]:
        request.applymarker(mark)
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        databases: Iterator[str | None] = iter([None])
    else:
        databases = fresh_postgres_database()
    for database in databases:
        env = {} if database is None else server_env(request.param, request, database)
        running = start(tmp, env)
        try:
            yield running
        finally:
            close(running)


#: Stack kinds and the markers of the servers each needs (``stack_of_kind``).
STACK_MARKS: dict[str, list[pytest.MarkDecorator]] = {
    "embedded": [],
    "postgres-redis-s3": [pytest.mark.postgres, pytest.mark.redis, pytest.mark.s3],
    "postgres-rabbitmq-s3": [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3],
}


def stack_of_kind(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    beat: bool = False,
    **overrides: str,
) -> Iterator[Stack]:
    """The body of a fixture parametrized by stack kind (``request.param``, a key of
    ``STACK_MARKS``): a callrec stack with a worker (and beat when asked)."""
    yield from each_stack(
        request,
        tmp_path_factory,
        STACK_MARKS,
        lambda tmp, env: start_stack(tmp, beat=beat, **env, **overrides),
        Stack.close,
    )
