"""Metrics after a known sequence of events, read from a real ``/metrics`` scrape over HTTP:
webhooks through the web app on loopback, captures in-process against the Telnyx emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, update

from config.metrics import configure_metrics, remove_dead_process_files
from config.metrics import scrape as scrape_text
from emulators.server import LoopbackServer
from emulators.telnyx import EmulatedRecording, TelnyxEmulator, TelnyxWebhookSigner
from ingest.app import create_app
from ledger import Recording, State, accept_refs, migrate
from ledger.models import utcnow
from providers.base import RecordingRef
from tests.fixtures.callrec import REPO, base_env, settings_from
from tests.fixtures.metrics import Scrape, parse, scrape
from tests.workers.test_reconcile import telnyx_env
from workers.capture import capture
from workers.runtime import Runtime, build_runtime

TD = {"provider": "telnyx", "account": "default"}


@dataclass
class Service:
    web: str
    runtime: Runtime
    signer: TelnyxWebhookSigner

    def announce(self, rec: EmulatedRecording, headers: dict[str, str] | None = None) -> int:
        body = self.signer.recording_saved_body(rec)
        return httpx.post(
            f"{self.web}/webhooks/telnyx",
            content=body,
            headers=headers or self.signer.headers(body),
        ).status_code

    def row_id(self, key: str) -> int:
        with self.runtime.sessions() as session:
            return int(
                session.execute(
                    select(Recording.id).where(Recording.recording_key == key)
                ).scalar_one()
            )

    def scrape(self) -> Scrape:
        return scrape(f"{self.web}/metrics")


@pytest.fixture
def service(
    tmp_path: Path, telnyx_emulator: TelnyxEmulator, telnyx_signer: TelnyxWebhookSigner
) -> Iterator[Service]:
    env = base_env(
        tmp_path,
        **telnyx_env(telnyx_emulator),
        CALLREC_TELNYX_PUBLIC_KEY=telnyx_signer.public_key_b64,
        CALLREC_METRICS_MISSING_AFTER_MINUTES="1",
    )
    settings = settings_from(env)
    migrate(settings.database_url)
    server = LoopbackServer(create_app(settings)).start()
    runtime = build_runtime(settings, lambda _id, _countdown, _lane: None)
    try:
        yield Service(server.url, runtime, telnyx_signer)
    finally:
        server.stop()
        runtime.close()


def test_metrics_after_a_known_sequence_of_events(
    service: Service, telnyx_emulator: TelnyxEmulator
) -> None:
    stored, gone = telnyx_emulator.add_recording(size=50_000), telnyx_emulator.add_recording()
    assert service.announce(stored) == 200
    assert service.announce(gone) == 200
    forged = service.signer.headers(b"another body")
    assert service.announce(stored, headers=forged) == 401
    assert httpx.post(f"{service.web}/webhooks/telnyx/nobody", content=b"{}").status_code == 401
    too_big = b" " * (service.runtime.settings.max_body_bytes + 1)
    assert httpx.post(f"{service.web}/webhooks/telnyx", content=too_big).status_code == 413

    telnyx_emulator.inject("audio", "expired")  # one URL refresh, then stored
    assert capture(service.runtime, service.row_id(stored.id)).state == State.STORED
    telnyx_emulator.remove_recording(gone.id)  # the API answers 404: failed for good
    assert capture(service.runtime, service.row_id(gone.id)).state == State.FAILED
    limited = telnyx_emulator.add_recording()
    ref = RecordingRef(recording_id=limited.id)
    (limited_id,) = accept_refs(
        service.runtime.sessions, "telnyx", "default", [ref], source="poll"
    ).new_ids
    telnyx_emulator.inject("api", "429", retry_after=1)  # waited out: the row retries
    assert capture(service.runtime, limited_id).state == State.RETRYING

    got = service.scrape()
    assert got.value("callrec_webhooks_received_total", **TD) == 4
    assert got.value("callrec_webhooks_received_total", provider="unknown", account="unknown") == 1
    assert got.value("callrec_webhooks_accepted_total", **TD, result="accepted") == 2
    assert got.value("callrec_webhooks_rejected_total", **TD, reason="signature") == 1
    assert got.value("callrec_webhooks_rejected_total", **TD, reason="too_large") == 1
    assert (
        got.value(
            "callrec_webhooks_rejected_total",
            provider="unknown",
            account="unknown",
            reason="unknown_account",
        )
        == 1
    )
    assert got.value("callrec_captures_started_total", **TD) == 3
    assert got.value("callrec_captures_stored_total", **TD) == 1
    assert got.value("callrec_captures_verified_total", **TD) == 1
    assert got.value("callrec_stored_bytes_total", **TD) == 50_000
    assert got.total("callrec_captures_failed_total", **TD) == 1
    assert got.value("callrec_captures_failed_total", **TD, reason="not_found") == 1
    assert got.value("callrec_url_refreshes_total", **TD) == 1
    assert got.value("callrec_rate_limited_total", **TD, during="capture") == 1
    assert got.value("callrec_event_to_stored_seconds_count", **TD) == 1
    # From the ledger at scrape time.
    assert got.value("callrec_ledger_backlog", **TD, state="retrying") == 1
    assert got.total("callrec_ledger_backlog") == 1
    assert got.value("callrec_ledger_oldest_pending_age_seconds", **TD) >= 0
    assert got.value("callrec_recordings", **TD, stage="announced") == 3
    assert got.value("callrec_recordings", **TD, stage="stored") == 1
    assert got.value("callrec_recordings", **TD, stage="failed") == 1
    assert got.value("callrec_recordings_missing", **TD) == 0  # nothing older than a minute
    # Label values are bounded: no recording id, URL or host in the page.
    for secret in (stored.id, gone.id, limited.id, telnyx_emulator.audio_host, "nobody"):
        assert secret not in got.text


def test_rows_not_stored_after_the_setting_are_expected_but_missing(
    service: Service, telnyx_emulator: TelnyxEmulator
) -> None:
    old, fresh = telnyx_emulator.add_recording(), telnyx_emulator.add_recording()
    assert service.announce(old) == 200 and service.announce(fresh) == 200
    with service.runtime.sessions.begin() as session:
        session.execute(
            update(Recording)
            .where(Recording.recording_key == old.id)
            .values(created_at=utcnow() - timedelta(minutes=2))
        )
    got = service.scrape()
    assert got.value("callrec_recordings_missing", **TD) == 1
    assert got.value("callrec_ledger_backlog", **TD, state="accepted") == 2
    assert got.value("callrec_ledger_oldest_pending_age_seconds", **TD) >= 120


CHILD = """
from config.metrics import configure_metrics, remove_dead_process_files
from config.metrics import scrape as scrape_text
from config.settings import load_settings

counters = configure_metrics(load_settings())
counters.captures_started.labels("telnyx", "default").inc(2)
counters.capture_stored("telnyx", "default", 100, 3.0)
"""


def test_counts_of_exited_processes_are_folded_into_an_archive_not_lost(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    settings = settings_from(env)
    directory = Path(str(settings.metrics_dir))
    child_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    for _round in range(2):  # two processes count, exit, and a starting process cleans up
        subprocess.run([sys.executable, "-c", CHILD], env=child_env, check=True, timeout=60)
        assert (
            len(list(directory.glob("counter_*.db")))
            == 1 + (directory / "counter_archive.db").exists()
        )
        assert remove_dead_process_files(str(directory)) == 2  # its counter and histogram files
    assert sorted(p.name for p in directory.glob("*.db")) == [
        "counter_archive.db",
        "histogram_archive.db",
    ]
    configure_metrics(settings)
    got = parse(scrape_text(settings).decode())
    assert got.value("callrec_captures_started_total", **TD) == 4
    assert got.value("callrec_captures_stored_total", **TD) == 2
    assert got.value("callrec_stored_bytes_total", **TD) == 200
    assert got.value("callrec_event_to_stored_seconds_count", **TD) == 2
    assert got.value("callrec_event_to_stored_seconds_bucket", **TD, le="2.5") == 0
    assert got.value("callrec_event_to_stored_seconds_bucket", **TD, le="5.0") == 2
    assert got.value("callrec_event_to_stored_seconds_sum", **TD) == 6.0
