"""Network faults between callrec and its servers (issue 6): the broker refused (R4), S3 down a
minute (R5), S3 reset mid-part (R6), a byte corrupted on its way to S3 (R12), and the ledger
database restarting. Each fault is injected by ``tests/faults/proxy.py`` in front of the real
server; the processes are real (``tests/e2e/stack.py``) and ``tally`` gives the verdict."""

from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest

from bench.common import drop_broker_state
from emulators.telnyx import EmulatedRecording
from storage import Storage, storage_from_url
from tests.e2e.stack import Stack, start_stack
from tests.faults.proxy import FaultProxy
from tests.faults.stacks import kill_stack
from tests.faults.tally import Tally, open_multipart_uploads, tally
from tests.fixtures.callrec import wait_for
from tests.fixtures.servers import REDIS_URL, fresh_postgres_database, require_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MIB = 1024 * 1024


def _behind(url: str, proxy: FaultProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    auth = netloc[0] + "@" if netloc[1] else ""
    return urlunsplit(parts._replace(netloc=f"{auth}{proxy.host}:{proxy.port}"))


@contextlib.contextmanager
def _proxy_for(url: str) -> Iterator[FaultProxy]:
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    with FaultProxy(parts.hostname, parts.port) as proxy:
        yield proxy


@dataclass
class S3Run:
    """A stack storing to a new moto bucket through ``proxy``; ``client`` and ``direct`` (a
    storage) reach moto without the proxy, for the verdict."""

    stack: Stack
    proxy: FaultProxy
    client: Any
    bucket: str
    direct: Storage

    def open_uploads(self) -> int:
        return open_multipart_uploads(self.client, self.bucket)

    def verdict(self, recs: list[EmulatedRecording]) -> Tally:
        result = tally(self.stack.sessions, self.direct, _sent(recs), s3=(self.client, self.bucket))
        print(result.line())
        result.assert_clean()
        return result


@contextlib.contextmanager
def _s3_stack(tmp_path: Path, moto: str, **overrides: str) -> Iterator[S3Run]:
    """An embedded stack (beat included) storing to a new bucket on moto through a proxy."""
    bucket = f"callrec-net-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    storage_url = f"s3://{bucket}/recordings"
    direct = storage_from_url(storage_url, s3_endpoint_url=moto, s3_region="us-east-1")
    with _proxy_for(moto) as proxy:
        stack = start_stack(
            tmp_path,
            beat=True,
            CALLREC_STORAGE_URL=storage_url,
            CALLREC_S3_ENDPOINT_URL=proxy.url("http"),
            CALLREC_S3_PART_SIZE_BYTES=str(5 * MIB),
            **overrides,
        )
        try:
            yield S3Run(stack, proxy, client, bucket, direct)
        finally:
            kill_stack(stack)


def _sent(recs: list[EmulatedRecording]) -> dict[str, str | None]:
    return {rec.id: rec.audio("mp3").sha256() for rec in recs}


def _all_final(stack: Stack, recs: list[EmulatedRecording], timeout: float) -> float:
    """Wait until every recording is stored or failed; return the seconds it took."""
    started = time.monotonic()
    keys = {rec.id for rec in recs}

    def done() -> bool:
        rows = [row for row in stack.rows() if row.recording_key in keys]
        return len(rows) == len(keys) and all(row.state in ("stored", "failed") for row in rows)

    try:
        wait_for(done, timeout, 0.25, f"{len(keys)} recordings to be final")
    except BaseException:
        for process in stack.processes:
            print(f"--- {process.log_path.name} ---\n{process.log()[-5000:]}")
        raise
    return time.monotonic() - started


def _states(stack: Stack, recs: list[EmulatedRecording]) -> dict[str, int]:
    keys = {rec.id for rec in recs}
    counts: dict[str, int] = {}
    for row in stack.rows():
        if row.recording_key in keys:
            counts[row.state] = counts.get(row.state, 0) + 1
    return counts


def _max_attempts(stack: Stack, recs: list[EmulatedRecording]) -> int:
    keys = {rec.id for rec in recs}
    return max(row.attempts for row in stack.rows() if row.recording_key in keys)


def _timed_announce(stack: Stack, rec: EmulatedRecording) -> float:
    started = time.monotonic()
    stack.announce(rec)
    return time.monotonic() - started


# -- R4 -----------------------------------------------------------------------------------------
@pytest.mark.redis
def test_r04_broker_down_webhooks_acknowledged_then_stored(tmp_path: Path) -> None:
    """Redis refused (listener closed, open connections cut) for the web, relay, worker and
    beat: 100 signed webhooks are all acknowledged without waiting on the broker, 100 ledger
    rows wait, and once the broker is back the relay/sweeper publish them and all are stored
    (≤ 60 s)."""
    require_server("Redis", REDIS_URL)
    with _proxy_for(REDIS_URL) as proxy:
        stack = start_stack(tmp_path, beat=True, CALLREC_BROKER_URL=_behind(REDIS_URL, proxy))
        try:
            proxy.refuse()
            proxy.cut_all()
            recs = [stack.emulator.add_recording(size=3_000) for _ in range(100)]
            latencies = []
            for rec in recs:  # one at a time: concurrent SQLite commits would blur the figure
                latencies.append(_timed_announce(stack, rec))
                assert latencies[-1] < 2, "a webhook waited on the broker"  # hang detector
            assert _states(stack, recs).get("stored", 0) == 0  # nothing reached a worker
            assert len([r for r in stack.rows() if r.recording_key in _sent(recs)]) == 100
            proxy.pass_through()
            back = _all_final(stack, recs, timeout=60)
            cuts = statistics.quantiles(latencies, n=100)
            print(
                f"R4 webhook latency p50={cuts[49] * 1000:.1f}ms p99={cuts[98] * 1000:.1f}ms "
                f"max={max(latencies) * 1000:.1f}ms; all stored {back:.1f}s after the broker "
                "returned"
            )
            tally(stack.sessions, stack.storage, _sent(recs)).assert_clean()
        finally:
            kill_stack(stack)
            drop_broker_state(REDIS_URL, stack.env["CALLREC_QUEUE_PREFIX"])


# -- R5 / R6 / R12 ------------------------------------------------------------------------------
@pytest.mark.s3
def test_r05_s3_down_a_minute_spends_no_attempts(tmp_path: Path, moto_server: str) -> None:
    """Captures in flight when S3 goes silent (blackhole, 30 s: parts hang until the task time
    limit) and then refuses connections (30 s: boto3 gives up, the capture waits the outage
    out without spending an attempt). None fails; all are stored ≤ 120 s after S3 returns; the
    uploads the outage left open are aborted by the sweeper."""
    with _s3_stack(tmp_path, moto_server) as run:
        stack, proxy = run.stack, run.proxy
        proxy.bandwidth(2 * MIB)  # slow enough that the big ones are mid-part when S3 goes
        big = [stack.emulator.add_recording(size=6 * MIB) for _ in range(2)]
        for rec in big:
            stack.announce(rec)
        wait_for(lambda: _states(stack, big).get("fetching") == 2, 30, 0.1, "2 captures")
        time.sleep(1)
        proxy.blackhole()
        small = [stack.emulator.add_recording(size=50_000) for _ in range(4)]
        for rec in small:
            stack.announce(rec)
        recs = big + small
        time.sleep(30)
        proxy.refuse()
        proxy.cut_all()
        time.sleep(30)
        during = _states(stack, recs)
        proxy.pass_through()
        back = _all_final(stack, recs, timeout=120)
        print(
            f"R5 states at the end of the outage {during}; all final {back:.1f}s after S3 "
            f"returned; most attempts of a row {_max_attempts(stack, recs)}"
        )
        assert _states(stack, recs) == {"stored": len(recs)}
        wait_for(lambda: run.open_uploads() == 0, 30, 0.5, "open uploads to be aborted")
        run.verdict(recs)


@pytest.fixture(scope="module")
def s3_run(tmp_path_factory: pytest.TempPathFactory, moto_server: str) -> Iterator[S3Run]:
    """One S3 stack shared by R6 and R12 (each leaves the proxy passing again)."""
    with _s3_stack(tmp_path_factory.mktemp("s3"), moto_server) as run:
        yield run


@pytest.mark.s3
def test_r06_s3_reset_mid_part_retries_the_part(s3_run: S3Run) -> None:
    """The connection to S3 is reset 2 MiB into the first part of a 2-part upload: boto3
    retries the part (its body is seekable), the object is stored whole, no upload stays
    open."""
    stack, proxy = s3_run.stack, s3_run.proxy
    rec = stack.emulator.add_recording(size=7 * MIB)
    resets = proxy.resets
    proxy.reset_after(2 * MIB, "upstream")
    stack.announce(rec)
    row = stack.wait_final(rec.id, timeout=60)
    assert row.state == "stored" and proxy.resets == resets + 1
    print(f"R6 resets=1 attempts={row.attempts} (1: the part was retried within the attempt)")
    result = s3_run.verdict([rec])
    assert result.stored == 1 and row.size_bytes == 7 * MIB


@pytest.mark.s3
def test_r12_byte_corrupted_on_its_way_to_s3_is_caught(s3_run: S3Run) -> None:
    """One byte of the first part is inverted between callrec and S3 (moto checks neither
    Content-MD5 nor x-amz-checksum-*): the part's ETag (the MD5 of what S3 received) differs
    from the MD5 callrec computed, the upload is aborted and the capture retried; the stored
    object is byte-exact."""
    stack, proxy = s3_run.stack, s3_run.proxy
    rec = stack.emulator.add_recording(size=6 * MIB)
    flips = proxy.flips
    proxy.flip_byte(MIB)
    stack.announce(rec)
    row = stack.wait_final(rec.id, timeout=60)
    assert row.state == "stored" and proxy.flips == flips + 1
    assert "corrupted in flight" in stack.processes[0].log()
    print(f"R12 flips=1 attempts={row.attempts} (2: caught by the part's ETag, retried)")
    assert row.attempts == 2
    s3_run.verdict([rec])


# -- the ledger database restarting (issue 6; no R number) --------------------------------------
@pytest.mark.postgres
def test_ledger_database_restart_loses_nothing(tmp_path: Path) -> None:
    """PostgreSQL behind the proxy: with captures and webhooks in flight every connection is
    cut and new ones refused for ~10 s. Webhooks may get 503 then (the provider retries:
    here, the test does), never a 2xx for something not committed; afterwards every accepted
    recording is stored once and the workers' pools recover (``pool_pre_ping``)."""
    for database in fresh_postgres_database():
        with _proxy_for(database) as proxy:
            stack = start_stack(
                tmp_path,
                beat=True,
                CALLREC_DATABASE_URL=_behind(database, proxy),
                CALLREC_TASK_TIME_LIMIT_SECONDS="6",
                CALLREC_STUCK_AFTER_SECONDS="8",
            )
            try:
                recs = [stack.emulator.add_recording(size=200_000) for _ in range(20)]
                accepted: list[EmulatedRecording] = []
                refused: list[EmulatedRecording] = []
                for rec in recs[:10]:
                    stack.announce(rec)
                    accepted.append(rec)
                proxy.refuse()
                proxy.cut_all()
                outage = time.monotonic()
                for rec in recs[10:]:
                    status = stack.send(stack.signer.recording_saved_body(rec)).status_code
                    assert status in (200, 503), status
                    (accepted if status == 200 else refused).append(rec)
                time.sleep(max(0.0, 10 - (time.monotonic() - outage)))
                proxy.pass_through()
                for rec in refused:  # the provider's retry
                    stack.announce(rec)
                back = _all_final(stack, recs, timeout=90)
                print(
                    f"ledger restart: {len(refused)} webhooks got 503 during the outage, "
                    f"{len(recs) - len(refused)} were accepted; all final {back:.1f}s after "
                    f"the database returned; most attempts {_max_attempts(stack, recs)}"
                )
                tally(stack.sessions, stack.storage, _sent(recs)).assert_clean()
            finally:
                kill_stack(stack)
