"""Provider-side faults (reliability.md §4 R7-R11) on one embedded stack: the Telnyx emulator over
HTTP, the web app, a real relay and Celery worker process (2 pool processes), SQLite ledger and
broker, disk storage. Faults come from the emulator (``emulator.inject``); timings are read from
its request log (arrival ``time.monotonic()`` of every request) and the worker's log.

* R7  429 storm: every API call answers 429 ``Retry-After: 5`` for 10 s;
* R8  API 503 x3, then a read longer than the HTTP timeout, then OK; a permanent 404;
* R9  audio URL expired before its first byte (S3's 403 ``Request has expired``);
* R10 audio URL expiring mid-stream (cut at 40 %, the spent URL 403 from then on);
* R11 truncated body: fewer bytes than ``Content-Length``, none at all, a cut chunked body.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Iterator

import pytest

from ledger.account_state import paused_until
from ledger.models import utcnow
from storage import metadata_key
from storage.disk import PARTIAL_DIR
from tests.e2e.stack import Stack, ago, audio_key, backfill, start_stack
from tests.faults.provider_stack import (
    api_gets,
    audio_statuses,
    clean_faults,
    logged_errors,
    tally_of,
    wait_seconds_from,
    worker_log,
)
from tests.fixtures.callrec import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

HTTP_TIMEOUT = 1.5
RETRY_BASE = 0.5
RETRY_CAP = 2.0
URL_REFRESHES = 2
SETTINGS = {
    "CALLREC_HTTP_TIMEOUT_SECONDS": str(HTTP_TIMEOUT),
    "CALLREC_RETRY_BASE_SECONDS": str(RETRY_BASE),
    "CALLREC_RETRY_MAX_SECONDS": str(RETRY_CAP),
    "CALLREC_URL_REFRESHES": str(URL_REFRESHES),
    "CALLREC_SHUTDOWN_GRACE_SECONDS": "0",  # a quick teardown
}
#: Slack on a gap's upper bound: the SQLite broker is polled once a second, on a loaded machine.
BROKER_SLACK = 2.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(tmp_path_factory.mktemp("provider-faults"), **SETTINGS)
    try:
        yield running
        assert logged_errors(running) == []
    finally:
        running.close()


@pytest.fixture(autouse=True)
def _clean_faults(stack: Stack) -> Iterator[Stack]:
    yield from clean_faults(stack)


# -- R7 ---------------------------------------------------------------------------------------

STORM_SECONDS = 10.0
RETRY_AFTER = 5.0
#: A request that left before the 429's pause was committed is "in flight" (ARCHITECTURE §8):
#: requests arriving this soon after a 429 are counted, not failed.
IN_FLIGHT_GRACE = 1.0


def test_r07_429_storm_pauses_the_account_everywhere_then_all_complete(stack: Stack) -> None:
    recs = [stack.emulator.add_recording(size=20_000, started_at=ago(minutes=1)) for _ in range(3)]
    start = time.monotonic()
    stack.emulator.inject("api", "429", times=100_000, retry_after=int(RETRY_AFTER))
    for rec in recs:
        stack.announce(rec)
    until = wait_for(
        lambda: paused_until(stack.sessions, "telnyx", "default"), 30, 0.1, "the pause"
    )
    assert until > utcnow()
    # Another process sees the pause: a backfill refuses to call the API meanwhile.
    refused = backfill(stack, "--since", ago(minutes=5).isoformat(), "--until", ago().isoformat())
    assert refused.returncode == 1 and "paused by a rate limit until" in refused.stderr
    wait_seconds_from(start, STORM_SECONDS)
    stack.emulator.clear_faults()
    storm_end = time.monotonic()
    rows = [stack.wait_final(rec.id, timeout=60) for rec in recs]
    recovered = time.monotonic() - storm_end
    result = tally_of(stack, recs)
    result.assert_clean()
    assert result.stored == len(recs)
    api = [r for r in stack.emulator.requests if r.at >= start and r.path.startswith("/v2/")]
    limited = [r.at for r in api if r.status == 429]
    assert len(limited) >= 2  # the storm outlasted a pause: the API was tried again, then paused
    early = [
        (round(r.at - t, 2), r.path)
        for t in limited
        for r in api
        if t + IN_FLIGHT_GRACE < r.at < t + RETRY_AFTER
    ]
    assert early == []  # not one request before a Retry-After elapsed
    in_flight = sum(1 for t in limited for r in api if t < r.at <= t + IN_FLIGHT_GRACE)
    # Deferrals cost no attempt: a row's attempts are its own 429s plus the one that stored it.
    for rec, row in zip(recs, rows, strict=True):
        own_429s = sum(
            1 for r in api if r.status == 429 and r.path.endswith(f"/recordings/{rec.id}")
        )
        assert row.attempts <= own_429s + 1, (rec.id, row.attempts, own_429s)
    print(
        f"R7: {len(api)} API requests, {len(limited)} answered 429, {in_flight} in flight "
        f"within {IN_FLIGHT_GRACE}s of a 429, attempts {[row.attempts for row in rows]}, "
        f"all stored {recovered:.1f}s after the storm"
    )


# -- R8 ---------------------------------------------------------------------------------------

_RETRYING = re.compile(r"attempt (\d+) failed, retrying in ([\d.]+)s")


def retry_delays(stack: Stack, row_id: int) -> list[float]:
    """The backoff the worker chose after each failed attempt of the row, from its log."""
    delays = []
    for entry in worker_log(stack):
        match = _RETRYING.match(str(entry.get("msg", "")))
        if match and entry.get("recording") == row_id:
            delays.append(float(match.group(2)))
    return delays


def test_r08_api_503s_and_a_stall_back_off_jittered_and_capped_and_404_fails_once(
    stack: Stack,
) -> None:
    gone = stack.emulator.add_recording(size=10_000)
    stack.emulator.remove_recording(gone.id)
    stack.announce(gone)
    failed = stack.wait_final(gone.id)
    assert failed.state == "failed" and failed.attempts == 1
    assert failed.last_error is not None and "not found" in failed.last_error

    rec = stack.emulator.add_recording(size=10_000)
    stack.emulator.inject("api", "503", times=3)
    stack.emulator.inject("api", "slow", seconds=HTTP_TIMEOUT + 1.0)
    stack.announce(rec)
    row = stack.wait_final(rec.id, timeout=90)
    assert row.state == "stored" and row.attempts == 5, row.last_error
    gets = api_gets(stack, rec)
    assert len(gets) == 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(gets)]
    delays = retry_delays(stack, row.id)
    assert len(delays) == 4
    for attempt, (gap, delay) in enumerate(zip(gaps, delays, strict=True), start=1):
        full = RETRY_BASE * 2 ** (attempt - 1)
        assert min(RETRY_CAP, full / 2) - 0.05 <= delay <= min(RETRY_CAP, full) + 0.05
        stall = HTTP_TIMEOUT if attempt == 4 else 0.0  # the 4th request timed out first
        assert gap >= delay + stall - 0.1  # no request before its backoff elapsed
        assert gap <= RETRY_CAP + stall + BROKER_SLACK  # capped
    assert delays == sorted(delays)  # growing: each floor is the previous ceiling
    assert any(d < min(RETRY_CAP, RETRY_BASE * 2**n) - 0.05 for n, d in enumerate(delays))
    # The 404 was final: not one more request for it while the other recording retried.
    assert len(api_gets(stack, gone)) == 1
    assert stack.row(gone.id).attempts == 1  # type: ignore[union-attr]
    tally_of(stack, [rec, gone], gone=[gone.id]).assert_clean()
    print(f"R8: gaps {[round(g, 2) for g in gaps]} s, chosen backoffs {delays} s")


# -- R9, R10, R11 -------------------------------------------------------------------------------


def test_r09_url_expired_before_the_first_byte_is_refreshed_at_most_n_times(
    stack: Stack,
) -> None:
    once = stack.emulator.add_recording(size=100_000)
    stack.emulator.inject("audio", "expired")
    stack.announce(once)
    row = stack.wait_final(once.id)
    assert row.state == "stored" and row.attempts == 1
    assert len(api_gets(stack, once)) == 2  # a fresh URL after the 403
    assert audio_statuses(stack, once) == [403, 200]

    # More expired URLs than one attempt may refresh: the attempt gives up after
    # 1 + URL_REFRESHES URLs, the next attempt gets a good one.
    many = stack.emulator.add_recording(size=100_000)
    stack.emulator.inject("audio", "expired", times=URL_REFRESHES + 2)
    stack.announce(many)
    row = stack.wait_final(many.id)
    assert row.state == "stored" and row.attempts == 2
    assert len(api_gets(stack, many)) == URL_REFRESHES + 3
    assert audio_statuses(stack, many) == [403] * (URL_REFRESHES + 2) + [200]
    tally_of(stack, [once, many]).assert_clean()


def test_r10_url_expiring_mid_stream_is_refetched_and_exact(stack: Stack) -> None:
    rec = stack.emulator.add_recording(size=1_000_000)
    stack.emulator.inject("audio", "expire_mid", after_bytes=400_000)
    stack.announce(rec)
    row = stack.wait_final(rec.id)
    assert row.state == "stored" and row.attempts == 1
    assert len(api_gets(stack, rec)) == 2  # a fresh URL for the second download
    # The cut download and the fresh one; the spent URL (403 from then on) never asked again.
    assert audio_statuses(stack, rec) == [200, 200]
    assert row.sha256 == rec.audio("mp3").sha256() == stack.stored_bytes_sha256(audio_key(rec))
    tally_of(stack, [rec]).assert_clean()


@pytest.mark.parametrize(
    ("kind", "after_bytes"),
    [("truncate", 400_000), ("truncate", 0), ("cut_chunked", 400_000)],
    ids=["content-length-40pct", "content-length-0-bytes", "chunked-40pct"],
)
def test_r11_truncated_body_writes_nothing_then_stores_exact(
    stack: Stack, kind: str, after_bytes: int
) -> None:
    rec = stack.emulator.add_recording(size=1_000_000)
    stack.emulator.inject("audio", kind, after_bytes=after_bytes)
    stack.announce(rec)
    row = stack.wait_final(rec.id)
    assert row.state == "stored" and row.attempts == 1 and row.size_bytes == 1_000_000
    assert audio_statuses(stack, rec) == [200, 200]  # the cut body, then the whole one
    key = audio_key(rec)
    assert row.sha256 == rec.audio("mp3").sha256() == stack.stored_bytes_sha256(key)
    assert stack.metadata(key)["sha256"] == row.sha256
    # The cut download wrote nothing under the key (else the second would have met it), and
    # its temp file is gone.
    said = [str(e.get("msg")) for e in worker_log(stack) if e.get("recording") == row.id]
    assert not any("already stored" in line for line in said)
    assert os.listdir(os.path.join(stack.storage.root, PARTIAL_DIR)) == []  # type: ignore[attr-defined]
    assert stack.storage.stat(metadata_key(key)) is not None
    tally_of(stack, [rec]).assert_clean()
