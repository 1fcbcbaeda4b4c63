"""VoiceGenie recordings from a poll to storage, for real: ``list_recordings`` over the emulator's
HTTP API, ``ledger.accept_refs(source="poll")``, the relay, a real Celery worker process.

Stacks: embedded (SQLite ledger and broker, local disk) and PostgreSQL + RabbitMQ + moto-server
S3. Nothing is patched. (The reconciler that will run the poll on a schedule is built
elsewhere; this drives the same two calls it makes.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from emulators.voicegenie import VoiceGenieEmulator, VoiceGenieRecording
from ledger import accept_refs
from ledger.accept import AcceptResult
from providers.registry import Accounts
from storage import metadata_key, recording_key
from tests.e2e.stack import Stack, server_env, start_stack
from tests.fixtures.callrec import settings_from
from tests.fixtures.servers import fresh_postgres_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STACKS = [
    pytest.param("embedded"),
    pytest.param(
        "postgres-rabbitmq-s3",
        marks=[pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.s3],
    ),
]
# Two quick attempts, so a recording that cannot be captured ends `failed` within the test.
FAST = {
    "CALLREC_MAX_ATTEMPTS": "2",
    "CALLREC_RETRY_BASE_SECONDS": "0.2",
    "CALLREC_RETRY_MAX_SECONDS": "1",
}


class VoiceGenieStack:
    def __init__(self, base: Stack, emulator: VoiceGenieEmulator) -> None:
        self.base, self.emulator = base, emulator
        self.http = httpx.Client(timeout=10, trust_env=False)
        self.provider = Accounts(settings_from(base.env), self.http).provider("voicegenie")

    def poll(self) -> AcceptResult:
        """What one reconciliation does: list the last hour, accept every ref as a poll row."""
        now = datetime.now(UTC)
        refs = list(self.provider.list_recordings(now - timedelta(hours=1), now))
        return accept_refs(self.base.sessions, "voicegenie", "default", refs, source="poll")

    def close(self) -> None:
        self.http.close()
        self.base.close()


@pytest.fixture(scope="module", params=STACKS)
def voicegenie(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VoiceGenieStack]:
    tmp = tmp_path_factory.mktemp(f"voicegenie-{request.param}")
    databases = [None] if request.param == "embedded" else fresh_postgres_database()
    for database in databases:  # a fresh PostgreSQL database, dropped after the module
        server = {} if database is None else server_env(request.param, request, database)
        with VoiceGenieEmulator() as emulator:
            settings = emulator.settings_env()
            running = VoiceGenieStack(start_stack(tmp, **settings, **FAST, **server), emulator)
            try:
                yield running
            finally:
                running.close()


def key_of(rec: VoiceGenieRecording) -> str:
    return recording_key("voicegenie", "default", rec.call_uuid, rec.format)


def media_gets(emulator: VoiceGenieEmulator, rec: VoiceGenieRecording) -> int:
    path = f"/media/{rec.call_uuid}.{rec.format}"
    return sum(1 for r in emulator.requests if r.method == "GET" and r.path == path)


def test_polled_recordings_are_stored_byte_exact_once(voicegenie: VoiceGenieStack) -> None:
    emulator, base = voicegenie.emulator, voicegenie.base
    recs = [
        emulator.add_recording(size=180_000, duration=11),
        emulator.add_recording(size=64_000, format="wav", campaign_id="campaign_b"),
        emulator.add_recording(size=1, duration=0),
    ]
    first = voicegenie.poll()
    assert len(first.new_ids) == len(recs)
    for rec in recs:
        row = base.wait_final(rec.call_uuid)
        key = key_of(rec)
        assert row.state == "stored", row.last_error
        assert (row.storage_key, row.size_bytes, row.sha256) == (
            key,
            rec.size,
            rec.audio().sha256(),
        )
        assert base.stored_bytes_sha256(key) == rec.audio().sha256()
        record = base.metadata(key)
        assert (record["provider"], record["recording_id"], record["call_id"]) == (
            "voicegenie",
            rec.call_uuid,
            rec.call_uuid,
        )
        assert (record["format"], record["size_bytes"]) == (rec.format, rec.size)
        assert record["duration_seconds"] == rec.duration
        assert record["provider_fields"]["campaign_id"] == rec.campaign_id
        assert "X-Amz" not in str(record)
    again = voicegenie.poll()  # the next poll overlaps: nothing new, nothing fetched again
    assert again.new_ids == [] and sorted(again.recording_ids) == sorted(first.recording_ids)
    for rec in recs:
        assert base.wait_final(rec.call_uuid).state == "stored"
        assert media_gets(emulator, rec) == 1


def test_lying_file_size_is_not_stored_as_complete(voicegenie: VoiceGenieStack) -> None:
    emulator, base = voicegenie.emulator, voicegenie.base
    liar = emulator.add_recording(size=50_000, reported_size=50_001)
    honest = emulator.add_recording(size=20_000)
    voicegenie.poll()
    assert base.wait_final(honest.call_uuid).state == "stored"
    row = base.wait_final(liar.call_uuid)
    assert row.state == "failed" and row.attempts == 2
    assert row.last_error == (
        "gave up after 2 attempts: audio has 50000 bytes, the provider said 50001"
    )
    assert row.storage_key is None and row.sha256 is None
    assert base.storage.stat(key_of(liar)) is None  # no object under its key
    assert base.storage.stat(metadata_key(key_of(liar))) is None  # and no record beside it
