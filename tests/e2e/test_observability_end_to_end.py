"""Metrics, Sentry and logs of real processes: gunicorn (two workers) and a Celery prefork
worker share one metrics directory; the web ``/metrics`` and the worker's own exporter are
scraped over HTTP; sentry-sdk in both processes sends to a local HTTP endpoint (the DSN)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulators.telnyx import EmulatedRecording
from tests.e2e.stack import Stack, start_stack
from tests.fixtures.callrec import ServiceProcess, answers, free_port, spawn_gunicorn, wait_for
from tests.fixtures.metrics import scrape
from tests.fixtures.sentry import SentryReceiver

pytestmark = pytest.mark.e2e

TD = {"provider": "telnyx", "account": "default"}


@pytest.fixture
def observed(
    tmp_path: Path, sentry_receiver: SentryReceiver
) -> Iterator[tuple[Stack, ServiceProcess, int]]:
    """A stack whose worker reports to Sentry and exports metrics, plus a gunicorn web."""
    exporter_port = free_port()
    stack = start_stack(
        tmp_path,
        CALLREC_SENTRY_DSN=sentry_receiver.dsn,
        CALLREC_WORKER_METRICS_PORT=str(exporter_port),
        CALLREC_LOG_LEVEL="debug",
    )
    try:
        web, stack.web_url = spawn_gunicorn(stack.env, tmp_path)
        stack.processes.append(web)
        wait_for(lambda: answers(f"{stack.web_url}/healthz"), 30, 0.2, "gunicorn to answer")
        yield stack, stack.processes[0], exporter_port
    finally:
        stack.close()


def test_counters_sentry_and_logs_of_real_processes(
    observed: tuple[Stack, ServiceProcess, int], sentry_receiver: SentryReceiver
) -> None:
    stack, worker, exporter_port = observed
    emulator = stack.emulator
    first, second = emulator.add_recording(size=40_000), emulator.add_recording(size=30_000)
    gone = emulator.add_recording()

    emulator.inject("audio", "expired")  # first: one URL refresh
    stack.announce(first)
    assert stack.wait_final(first.id).state == "stored"
    emulator.inject("api", "429", retry_after=1)  # second: a 429 waited out, then stored
    stack.announce(second)
    assert stack.wait_final(second.id).state == "stored"
    gone_body = stack.signer.recording_saved_body(gone)
    emulator.remove_recording(gone.id)  # the API answers 404: failed for good
    assert stack.send(gone_body).status_code == 200
    assert stack.wait_final(gone.id).state == "failed"
    forged = stack.signer.headers(b"some other body")
    assert stack.send(stack.signer.recording_saved_body(first), forged).status_code == 401

    # The web /metrics merges both gunicorn workers and the Celery prefork children.
    got = scrape(f"{stack.web_url}/metrics")
    assert got.value("callrec_webhooks_received_total", **TD) == 4
    assert got.value("callrec_webhooks_accepted_total", **TD, result="accepted") == 3
    assert got.value("callrec_webhooks_rejected_total", **TD, reason="signature") == 1
    assert got.value("callrec_captures_started_total", **TD) == 4  # the 429 attempt counts
    assert got.value("callrec_captures_stored_total", **TD) == 2
    assert got.value("callrec_captures_verified_total", **TD) == 2
    assert got.value("callrec_stored_bytes_total", **TD) == 70_000
    assert got.total("callrec_captures_failed_total") == 1
    assert got.value("callrec_captures_failed_total", **TD, reason="not_found") == 1
    assert got.value("callrec_url_refreshes_total", **TD) == 1
    assert got.value("callrec_rate_limited_total", **TD, during="capture") == 1
    assert got.value("callrec_event_to_stored_seconds_count", **TD) == 2
    assert got.total("callrec_ledger_backlog") == 0
    assert got.value("callrec_recordings", **TD, stage="announced") == 3
    # The worker's own exporter serves the same directory.
    exported = scrape(f"http://127.0.0.1:{exporter_port}/metrics")
    assert exported.value("callrec_captures_stored_total", **TD) == 2
    assert exported.value("callrec_rate_limited_total", **TD, during="capture") == 1

    # Sentry: the final failure is one event; the 401 and the 429 are none.
    wait_for(sentry_receiver.events, 15, 0.2, "the final failure's Sentry event")
    secrets = _secrets_in_play(stack, first, second, gone)
    stack.close()  # processes exit and flush
    (event,) = sentry_receiver.events()
    assert event["fingerprint"] == ["recording-failed", "telnyx", "not_found"]
    assert event["tags"]["provider"] == "telnyx"
    assert event["tags"]["reason"] == "not_found"
    assert event["level"] == "error"

    for text in (sentry_receiver.text(), worker.log(), stack.processes[-1].log()):
        for secret in secrets:
            assert secret not in text
    _assert_capture_lines_carry_context(worker.log())


def _secrets_in_play(stack: Stack, *recordings: EmulatedRecording) -> list[str]:
    signed = [url for rec in recordings for url in rec.download_urls().values()]
    return [
        stack.emulator.api_key,
        stack.signer.public_key_b64,
        "X-Amz-Signature",
        "X-Amz-Credential",
        *(url.partition("?")[2] for url in signed),
    ]


def _assert_capture_lines_carry_context(log: str) -> None:
    """Every line a capture task logs carries the recording, provider, account and attempt."""
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    capture_lines = [e for e in entries if e.get("logger") == "workers.capture"]
    assert capture_lines
    for entry in capture_lines:
        if "not claimable" in entry["msg"]:  # not claimed: only the ledger id is known
            assert "recording" in entry, entry
            continue
        assert {"recording", "provider", "account", "attempt", "task_id"} <= entry.keys(), entry
