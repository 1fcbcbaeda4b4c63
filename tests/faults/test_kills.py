"""Process kills (rows R1, R2a, R2b) and a task outliving the Redis visibility timeout.

Real worker processes, SIGKILLed at a chosen point of a paced download (``paced.py``): a pool
child (R1, the main process lives on and forks a new child), or the whole worker (R2a/R2b, a
new worker is started). The verdict is the fault suite's ``tally``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from emulators.telnyx import EmulatedRecording
from tests.e2e.stack import Stack
from tests.faults.brokers import PrivateRedis
from tests.faults.paced import PacedTelnyxEmulator, Stream
from tests.faults.processes import children, pid_holding
from tests.faults.stacks import (
    add_worker,
    fault_stack,
    s3_of,
    stored_events,
    verdict,
    wait_all_final,
)
from tests.fixtures.callrec import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: a 10 MiB recording is two parts


def _private_redis(tmp_path: Path) -> PrivateRedis:
    return PrivateRedis(tmp_path / "redis").start()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    redis = _private_redis(tmp_path)
    yield redis
    redis.stop()


def _s3_stack_on(
    redis: PrivateRedis,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    emulator: PacedTelnyxEmulator,
    **options: Any,
) -> contextlib.AbstractContextManager[Stack]:
    """A PostgreSQL + S3 stack whose broker is the test's own Redis."""
    return fault_stack(
        request, tmp_path, "postgres-redis-s3", broker_url=redis.url, emulator=emulator, **options
    )


# -- R1: pool child killed mid-download and mid-upload ------------------------------------------


@dataclass
class Kill:
    """One planned kill: ``phase`` "download" (no part uploaded yet) or "upload" (a multipart
    upload of the recording is open); what it hit is filled in when it happens."""

    phase: str
    recording: str = ""
    at_fraction: float = 0.0


def _open_uploads(client: Any, bucket: str) -> dict[str, set[str]]:
    """Open multipart uploads: storage key suffix (the recording's file name) → upload ids."""
    found: dict[str, set[str]] = {}
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        found.setdefault(upload["Key"].rsplit("/", 1)[-1], set()).add(upload["UploadId"])
    return found


def _kill_streaming_child(worker_pid: int, stream: Stream) -> bool:
    child = pid_holding(stream.client_port, children(worker_pid))
    if child is None:
        return False
    os.kill(child, signal.SIGKILL)
    return True


def _run_kill_plan(
    stack: Stack, emulator: PacedTelnyxEmulator, plan: list[Kill], timeout: float
) -> None:
    """Kill pool children, in ``plan`` order, each in its phase: the child streaming any
    recording whose current download is in that phase (a recording is killed once per
    download at most; uploads seen at an earlier kill belong to a dead attempt)."""
    worker_pid = stack.processes[0].pid
    s3 = s3_of(stack)
    assert s3 is not None
    dead_uploads: set[str] = set()
    killed_streams: set[int] = set()
    pending = list(plan)

    def step() -> bool:
        kill = pending[0]
        uploads = _open_uploads(*s3)
        for stream in emulator.streams():
            if stream.finished or id(stream) in killed_streams or stream.fraction < 0.1:
                continue
            live = uploads.get(f"{stream.recording_id}.mp3", set()) - dead_uploads
            if kill.phase == "upload" and not live:
                continue
            if kill.phase == "download" and (live or stream.fraction > 0.4):
                continue  # the first part (half the recording) may be going up already
            if _kill_streaming_child(worker_pid, stream):
                kill.recording, kill.at_fraction = stream.recording_id, stream.fraction
                killed_streams.add(id(stream))
                dead_uploads.update(live)
                pending.pop(0)
                print(f"killed {kill.phase} of {kill.recording} at {kill.at_fraction:.0%}")
                break
        return not pending

    wait_for(step, timeout, 0.05, "every planned kill")


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.s3
def test_r01_pool_child_killed_mid_download_and_mid_upload_stores_once(
    request: pytest.FixtureRequest, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """Four pool-child SIGKILLs over three 10 MiB recordings (S3 multipart, 5 MiB parts):
    before the first part and while a multipart upload is open, one recording twice. The
    main worker forks new children; each killed attempt is redelivered (its claim refuses it
    while the dead child's lease runs) and re-driven by the sweeper once the lease expires."""
    emulator = PacedTelnyxEmulator(bytes_per_second=5 * MiB, url_ttl_seconds=600)
    with _s3_stack_on(
        private_redis,
        request,
        tmp_path,
        emulator,
        beat=True,
        CALLREC_S3_PART_SIZE_BYTES=str(PART),
        CALLREC_TASK_TIME_LIMIT_SECONDS="6",
        CALLREC_STUCK_AFTER_SECONDS="7",
    ) as stack:
        recs = [emulator.add_recording(size=2 * PART) for _ in range(3)]
        plan = [Kill("download"), Kill("upload"), Kill("download"), Kill("upload")]
        started = time.monotonic()
        for rec in recs:
            stack.announce(rec)
        _run_kill_plan(stack, emulator, plan, timeout=90)
        wait_all_final(stack, [rec.id for rec in recs], timeout=90)
        drained = time.monotonic() - started
        result = verdict(stack, recs)
        print(f"R1: {len(plan)} kills, drained {drained:.1f}s after the first webhook")
        result.assert_clean()
        assert stack.processes[0].alive()  # the main process survived every child kill
        kills = Counter(kill.recording for kill in plan)
        assert len(kills) >= 2  # several recordings
        assert {row.recording_key: row.attempts for row in stack.rows()} == {
            rec.id: 1 + kills[rec.id] for rec in recs
        }
        assert all(stored_events(stack, rec.id) == 1 for rec in recs)


# -- R2a/R2b: the main worker process killed -----------------------------------------------------

_RECEIVED = re.compile(r"callrec\.capture\[([0-9a-f-]+)\] received")


def _received_task_ids(log: str) -> list[str]:
    """Ids of the capture messages a worker received, from its log."""
    return _RECEIVED.findall(log)


def _kill_worker_mid_download(
    stack: Stack, emulator: PacedTelnyxEmulator, rec: EmulatedRecording
) -> float:
    """SIGKILL the worker's whole process group (main and pool) while it streams ``rec``;
    later downloads run unpaced. Returns the time of the kill."""
    wait_for(
        lambda: (streams := emulator.streams(rec.id)) and streams[0].fraction >= 0.1,
        30,
        0.05,
        "the download to be under way",
    )
    worker = stack.processes[0]
    os.killpg(worker.pid, signal.SIGKILL)
    worker.process.wait(10)
    killed = time.monotonic()
    emulator.bytes_per_second = None
    return killed


def _capture_to_kill(stack: Stack, emulator: PacedTelnyxEmulator) -> EmulatedRecording:
    rec = emulator.add_recording(size=400_000)
    stack.announce(rec)
    return rec


def _stored_after_kill(stack: Stack, rec: EmulatedRecording, killed: float, bound: float) -> float:
    row = stack.wait_final(rec.id, timeout=bound - (time.monotonic() - killed))
    took = time.monotonic() - killed
    assert row.state == "stored" and row.attempts == 2
    return took


_SERVER = [pytest.mark.postgres, pytest.mark.s3]


@pytest.mark.parametrize(
    "broker",
    [
        pytest.param("redis", marks=[*_SERVER, pytest.mark.redis]),
        pytest.param("rabbitmq", marks=[*_SERVER, pytest.mark.rabbitmq]),
    ],
)
def test_r02a_main_worker_killed_is_redelivered(
    broker: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGKILL the worker's main process (with its pool) mid-download, start a new worker.

    Redis: the message stays in kombu's unacked set and the new worker restores it once it is
    older than the visibility timeout (no sweeper runs: the broker alone brings it back); the
    dead attempt's lease (STUCK_AFTER) has expired by then, so the claim lets it through.
    RabbitMQ: the broker requeues it the moment the connection dies and the new worker gets
    it at once, but the claim refuses it while the dead attempt's lease runs; the sweeper
    re-drives the row when the lease expires.
    """
    timings = {
        "CALLREC_TASK_TIME_LIMIT_SECONDS": "5",
        "CALLREC_STUCK_AFTER_SECONDS": "6",
        "CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS": "12",
    }
    emulator = PacedTelnyxEmulator(bytes_per_second=100_000, url_ttl_seconds=600)
    with contextlib.ExitStack() as cleanup:
        if broker == "redis":
            redis = cleanup.enter_context(contextlib.closing(_private_redis(tmp_path)))
            kind, broker_url, beat, bound = "postgres-redis-s3", redis.url, False, 12 + 10
        else:
            kind, broker_url, beat, bound = "postgres-rabbitmq-s3", None, True, 6 + 10
        stack = cleanup.enter_context(
            fault_stack(
                request,
                tmp_path,
                kind,
                broker_url=broker_url,
                emulator=emulator,
                beat=beat,
                **timings,
            )
        )
        rec = _capture_to_kill(stack, emulator)
        killed = _kill_worker_mid_download(stack, emulator, rec)
        (original,) = _received_task_ids(stack.processes[0].log())
        second = add_worker(stack, tmp_path / "second")
        took = _stored_after_kill(stack, rec, killed, bound)
        print(f"R2a {broker}: stored {took:.1f}s after the main worker's SIGKILL")
        if broker == "redis":  # the broker itself gave the same message back
            assert original in _received_task_ids(second.log())
        verdict(stack, [rec]).assert_clean()


def test_r02b_main_worker_killed_on_the_sqlite_broker_is_swept(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The embedded default (kombu's SQLAlchemy transport on SQLite): SIGKILL the worker
    mid-download. The transport marked the message invisible on delivery and only the dead
    process knew it was unacked, so it is never delivered again (reliability.md §1.4): the
    new worker never receives it. The ledger sweeper re-publishes the row once the dead
    attempt's lease (STUCK_AFTER) expires and the new worker stores it once, byte-exact."""
    emulator = PacedTelnyxEmulator(bytes_per_second=100_000, url_ttl_seconds=600)
    stuck_after = 6
    with fault_stack(
        request,
        tmp_path,
        "embedded",
        emulator=emulator,
        beat=True,
        CALLREC_TASK_TIME_LIMIT_SECONDS="5",
        CALLREC_STUCK_AFTER_SECONDS=str(stuck_after),
    ) as stack:
        rec = _capture_to_kill(stack, emulator)
        killed = _kill_worker_mid_download(stack, emulator, rec)
        (original,) = _received_task_ids(stack.processes[0].log())
        second = add_worker(stack, tmp_path / "second")
        took = _stored_after_kill(stack, rec, killed, stuck_after + 10)
        print(f"R2b: stored {took:.1f}s after the SIGKILL (lease {stuck_after}s)")
        received = _received_task_ids(second.log())
        assert received and original not in received  # lost by the transport, swept by us
        assert "sweeper published" in "".join(p.log() for p in stack.processes)
        verdict(stack, [rec]).assert_clean()


# -- a task outliving the Redis visibility timeout ------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.s3
def test_task_outliving_the_visibility_timeout_stores_once(
    request: pytest.FixtureRequest, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """Redis hands a task still running on worker A to worker B (issue 6).

    No escape hatch in the settings: each worker's own configuration passes the check
    (time limit < STUCK_AFTER < visibility timeout), but they disagree, as on a shared broker
    where "the shortest value wins" (reliability.md §1.3) or mid-way through a config change.
    A (time limit 40 s, lease 45 s) streams a slow 1 MiB recording; B (visibility 10 s,
    time limit 3 s, lease 4 s) restores A's unacked message after 10 s, its claim finds A's
    claim past B's lease and takes the row, and B stores the recording while A still
    downloads. A's conditional PutObject then gets 412, the object holds the same bytes, and
    A's claim is gone: A records nothing and exits cleanly.
    """
    emulator = PacedTelnyxEmulator(bytes_per_second=16 * 1024, url_ttl_seconds=600)
    with _s3_stack_on(
        private_redis,
        request,
        tmp_path,
        emulator,
        concurrency=1,
        CALLREC_TASK_TIME_LIMIT_SECONDS="40",
        CALLREC_STUCK_AFTER_SECONDS="45",
        CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS="60",
    ) as stack:
        first = stack.processes[0]
        rec = emulator.add_recording(size=MiB)
        stack.announce(rec)
        (slow,) = wait_for(lambda: emulator.streams(rec.id), 30, 0.05, "A's download to start")
        emulator.bytes_per_second = None  # B's download runs at full speed
        second = add_worker(
            stack,
            tmp_path / "second",
            concurrency=1,
            CALLREC_TASK_TIME_LIMIT_SECONDS="3",
            CALLREC_STUCK_AFTER_SECONDS="4",
            CALLREC_BROKER_VISIBILITY_TIMEOUT_SECONDS="10",
        )
        row = stack.wait_final(rec.id, timeout=60)
        assert row.state == "stored" and row.attempts == 2
        assert not slow.finished  # A (16 KB/s, 64 s for the whole body) is still downloading
        slow.rate = None
        wait_for(lambda: "claim lost" in first.log(), 30, 0.2, "A to finish its attempt")
        (original,) = _received_task_ids(first.log())
        assert _received_task_ids(second.log()) == [original]  # the same message, redelivered
        assert "object already stored by an earlier attempt, same sha256" in first.log()
        assert "Traceback" not in first.log() + second.log()
        assert first.alive() and second.alive()
        assert stored_events(stack, rec.id) == 1
        assert all(stream.finished for stream in emulator.streams(rec.id))
        verdict(stack, [rec]).assert_clean()
