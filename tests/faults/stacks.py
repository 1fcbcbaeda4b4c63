"""Stacks for the fault tests: ``tests.e2e.stack`` on a chosen broker, and the run's verdict.

``fault_stack`` builds an embedded stack, or a server one (PostgreSQL database of its own, a
new S3 bucket on moto) whose broker may be a private one the test kills (``brokers.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import func, select

from emulators.telnyx import EmulatedRecording, TelnyxEmulator
from ledger.models import Recording, RecordingEvent, State
from storage.s3 import S3Storage
from tests.e2e.stack import Stack, server_env, start_stack
from tests.faults.tally import Tally, open_multipart_uploads, tally
from tests.fixtures.callrec import ServiceProcess, start_worker, wait_for
from tests.fixtures.servers import fresh_postgres_database

__all__ = [
    "add_worker",
    "fault_stack",
    "kill_stack",
    "s3_of",
    "sent_of",
    "stored_events",
    "verdict",
    "wait_all_final",
]


@contextlib.contextmanager
def fault_stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kind: str,
    *,
    broker_url: str | None = None,
    emulator: TelnyxEmulator | None = None,
    beat: bool = False,
    concurrency: int = 2,
    **overrides: str,
) -> Iterator[Stack]:
    """A running stack of ``kind`` (``embedded`` or a ``STACK_MARKS`` server kind)."""
    with contextlib.ExitStack() as cleanup:
        env: dict[str, str] = {}
        if kind != "embedded":
            databases = fresh_postgres_database()
            cleanup.callback(databases.close)
            env = server_env(kind, request, next(databases))
        if broker_url is not None:
            env["CALLREC_BROKER_URL"] = broker_url
        stack = start_stack(
            tmp_path, beat=beat, emulator=emulator, concurrency=concurrency, **{**env, **overrides}
        )
        cleanup.callback(stack.close)
        yield stack


def add_worker(
    stack: Stack, folder: Path, concurrency: int = 2, **overrides: str
) -> ServiceProcess:
    """Start one more worker process on the stack (settings ``overrides`` for it alone)."""
    folder.mkdir(parents=True, exist_ok=True)
    worker = start_worker({**stack.env, **overrides}, folder, concurrency)
    stack.processes.append(worker)
    return worker


def kill_stack(stack: Stack) -> None:
    """Stop the stack at once: the verdict is taken, nothing in its processes matters any more
    (a warm shutdown of each process in turn costs ~12 s per test)."""
    for process in stack.processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.process.pid, signal.SIGKILL)
    stack.close()


def s3_of(stack: Stack) -> tuple[Any, str] | None:
    """``(client, bucket)`` of the stack's S3 storage, None for disk."""
    storage = stack.storage
    if not isinstance(storage, S3Storage):
        return None
    client = boto3.client(
        "s3", endpoint_url=stack.env["CALLREC_S3_ENDPOINT_URL"], region_name="us-east-1"
    )
    return client, storage.bucket


def sent_of(recs: Iterable[EmulatedRecording]) -> dict[str, str | None]:
    """The tally's ``sent``: recording id → sha256 of the bytes the emulator serves."""
    return {rec.id: rec.audio("mp3").sha256() for rec in recs}


def wait_all_final(stack: Stack, keys: Iterable[str], timeout: float) -> None:
    """Wait until every row of ``keys`` is stored or failed (printing the logs if not)."""
    deadline = time.monotonic() + timeout
    for key in keys:
        stack.wait_final(key, timeout=max(1.0, deadline - time.monotonic()))


def verdict(stack: Stack, recs: Iterable[EmulatedRecording], upload_wait: float = 30) -> Tally:
    """The tally of the run, after waiting (bounded) for dead writers' uploads to be aborted."""
    s3 = s3_of(stack)
    if s3 is not None:
        # Not met in time: the tally counts the open uploads and fails with the figures.
        with contextlib.suppress(pytest.fail.Exception):
            wait_for(lambda: open_multipart_uploads(*s3) == 0, upload_wait, 0.2, "no open upload")
    result = tally(stack.sessions, stack.storage, sent_of(recs), s3=s3)
    print(result.line())
    return result


def stored_events(stack: Stack, key: str) -> int:
    """How many times the row ``key`` entered ``stored`` (its history, not its state)."""
    with stack.sessions() as session:
        return int(
            session.execute(
                select(func.count())
                .select_from(RecordingEvent)
                .join(Recording, Recording.id == RecordingEvent.recording_id)
                .where(Recording.recording_key == key, RecordingEvent.state == State.STORED)
            ).scalar_one()
        )
