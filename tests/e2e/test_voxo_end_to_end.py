"""VOXO recordings from the list API to storage, for real: ``list_recordings`` output accepted as
``poll`` ledger rows, a real relay and Celery worker process, the VOXO emulator over HTTP with
60-second-style URLs shortened to 1 s. Embedded (SQLite, disk) and PostgreSQL + Redis + moto S3.
Nothing is patched."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emulators.voxo import VoxoEmulator, VoxoRecording
from ledger import accept_refs
from providers.http import new_http_client
from providers.registry import Accounts
from storage import recording_key
from tests.e2e.stack import Stack, each_stack, start_stack_with
from tests.fixtures.callrec import settings_from

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STACKS = {
    "embedded": [],
    "postgres-redis-s3": [pytest.mark.postgres, pytest.mark.redis, pytest.mark.s3],
}
FAST_RETRIES = {"CALLREC_RETRY_BASE_SECONDS": "0.5", "CALLREC_RETRY_MAX_SECONDS": "2"}
URL_TTL = 1.0


@dataclass
class VoxoStack:
    base: Stack
    emulator: VoxoEmulator
    accounts: Accounts

    def poll(self, since: datetime, until: datetime) -> list[int]:
        """What the reconciler will do: list the window, accept the refs as ``poll`` rows."""
        refs = list(self.accounts.provider("voxo").list_recordings(since, until))
        result = accept_refs(self.base.sessions, "voxo", "default", refs, source="poll")
        return list(result.recording_ids)

    def media_gets(self, rec: VoxoRecording) -> list[int]:
        return [r.status for r in self.emulator.requests if r.path == f"/media/{rec.unique_id}.mp3"]

    def url_fetches(self, rec: VoxoRecording) -> int:
        path = f"/call-recordings/{rec.unique_id}"
        return sum(1 for r in self.emulator.requests if r.path == path and r.status == 200)


def start_voxo_stack(tmp: Path, **overrides: str) -> VoxoStack:
    emulator = VoxoEmulator(url_ttl_seconds=URL_TTL).start()
    base = start_stack_with(
        emulator,
        tmp,
        **emulator.settings_env(),
        **FAST_RETRIES,
        **overrides,
    )
    http = new_http_client(10)
    base._closers.append(http.close)
    accounts = Accounts(settings_from(base.env), http)
    return VoxoStack(base, emulator, accounts)


@pytest.fixture(scope="module", params=list(STACKS), ids=list(STACKS))
def voxo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VoxoStack]:
    yield from each_stack(
        request,
        tmp_path_factory,
        STACKS,
        lambda tmp, env: start_voxo_stack(tmp, **env),
        lambda running: running.base.close(),
    )


@pytest.fixture(autouse=True)
def _clean_faults(voxo: VoxoStack) -> Iterator[None]:
    voxo.emulator.clear_faults()
    yield
    voxo.emulator.clear_faults()


def key(rec: VoxoRecording) -> str:
    return recording_key("voxo", "default", rec.unique_id, "mp3")


def test_polled_recordings_across_a_dst_change_are_stored_once(voxo: VoxoStack) -> None:
    fall_back = datetime(2025, 11, 2, 6, 0, tzinfo=UTC)  # 01:00 CDT, an hour later 01:00 CST
    recs = [
        voxo.emulator.add_recording(fall_back - timedelta(days=1), size=120_000, duration=18),
        voxo.emulator.add_recording(fall_back + timedelta(minutes=30), size=60_000),
        voxo.emulator.add_recording(fall_back + timedelta(minutes=90), size=60_000),
        voxo.emulator.add_recording(fall_back + timedelta(days=2), size=10_000),
    ]
    skipped = voxo.emulator.add_recording(fall_back + timedelta(hours=2), recorded=0)
    since, until = fall_back - timedelta(days=2), fall_back + timedelta(days=3)
    ids = voxo.poll(since, until)
    assert len(ids) == len(recs) and len(voxo.emulator.report_windows) >= 3
    for rec in recs:
        row = voxo.base.wait_final(rec.unique_id)
        assert row.state == "stored", row.last_error
        assert (row.storage_key, row.size_bytes, row.source) == (key(rec), rec.size, "poll")
        assert row.sha256 == rec.audio().sha256() == voxo.base.stored_bytes_sha256(key(rec))
        record = voxo.base.metadata(key(rec))
        assert (record["provider"], record["recording_id"]) == ("voxo", rec.unique_id)
        assert record["provider_fields"]["call_report_id"] == rec.call_report_id
        assert record["started_at"] == rec.started_at.isoformat().replace("+00:00", "Z")
        assert (record["format"], record["content_type"]) == ("mp3", "audio/mpeg")
        assert "X-Amz" not in str(record) and "8005550123" not in str(record)
    assert voxo.base.row(skipped.unique_id) is None
    assert sorted(voxo.poll(since, until)) == sorted(ids)  # a second poll adds nothing
    for rec in recs:
        assert voxo.media_gets(rec) == [200]  # downloaded once


def test_url_expiring_during_a_slow_download_is_refreshed(voxo: VoxoStack) -> None:
    rec = voxo.emulator.add_recording(datetime(2025, 6, 1, 15, tzinfo=UTC), size=400_000)
    voxo.emulator.inject("audio", "slow", seconds=4 * URL_TTL)  # outlives its 1 s URL
    voxo.poll(rec.started_at - timedelta(minutes=1), rec.started_at + timedelta(minutes=1))
    row = voxo.base.wait_final(rec.unique_id)
    assert row.state == "stored", row.last_error
    assert row.attempts == 1  # refreshed within the attempt, not retried later
    assert row.sha256 == rec.audio().sha256() == voxo.base.stored_bytes_sha256(key(rec))
    assert voxo.url_fetches(rec) == 2  # one URL per download, each fetched right before it
    assert voxo.media_gets(rec) == [200, 200]  # the first cut when its URL expired
    assert "fetching a fresh URL" in voxo.base.processes[0].log()
