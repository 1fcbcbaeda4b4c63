"""R23, secrets/PII canary: no API key, signing secret, token, signed URL or phone number in a
log line or Sentry event.

Every test under ``tests/faults`` runs under the canary (``canary_plugin``: callrec at DEBUG,
Sentry to a local receiver, a scan after each test). Here: the scanner finds what is planted
in a log file, a log record and a Sentry event (or a green suite would prove nothing), and one
stack with every provider's secrets configured goes through errors that are logged and reported
to Sentry (a 404 and audio 500s that fail for good, a 429, an expired URL, a Twilio recording
that is absent) with 0 hits.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sentry_sdk

from config.logging import redacting_handler
from emulators import numbers
from emulators.audio import AudioSource
from emulators.quo import QuoEmulator, QuoWebhookSender, call_event_body
from emulators.telnyx import EmulatedRecording
from emulators.twilio import TwilioCallbackSigner, TwilioEmulator, callback_params
from emulators.voicegenie import VoiceGenieEmulator
from emulators.voxo import VoxoEmulator
from ledger import accept_refs
from providers.http import new_http_client
from providers.registry import Accounts
from tests.e2e.stack import Stack, start_stack
from tests.faults.canary import CanarySet, Scanner
from tests.faults.tally import tally
from tests.fixtures.callrec import settings_from, wait_for
from tests.fixtures.sentry import SentryReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

API_KEY = "canary-telnyx-api-key-5f0c1e"
TWILIO_SID = "AC" + "c4" * 16
TWILIO_TOKEN = "canarytwiliotoken0123456789abcde"
SIGNED_URL = (
    "http://127.0.0.1:9/media/r.mp3?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=ASIAEMULATOR%2F20260101%2Fus-east-1&X-Amz-Signature=" + "ab" * 32
)


def _planted() -> CanarySet:
    canaries = CanarySet()
    canaries.add_env(
        {
            "CALLREC_TELNYX_API_KEY": API_KEY,
            "CALLREC_TWILIO_ACCOUNT_SID": TWILIO_SID,
            "CALLREC_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        }
    )
    return canaries


def test_r23_scanner_finds_planted_canaries(tmp_path: Path) -> None:
    """Positive control: a secret, a Basic header, a signed URL and a phone number planted in a
    log file, a log record and a Sentry event are all found, located, and never printed."""
    scanner = Scanner(_planted())

    # A process's log file: only what was appended since the last scan is read.
    log = tmp_path / "worker.log"
    log.write_text(f'{{"msg": "started"}}\n{{"msg": "GET with key {API_KEY}"}}\n')
    scanner.watch(log)
    first = scanner.scan_files()
    with log.open("a") as stream:
        stream.write(f'{{"msg": "download {SIGNED_URL} for {numbers.TELNYX_FROM}"}}\n')
    second = scanner.scan_files()
    assert [(h.where, h.label) for h in first] == [(f"{log}:2", "secret CALLREC_TELNYX_API_KEY")]
    assert {h.label for h in second} == {
        "URL query string",  # the whole query: the X-Amz-* parameters in it too
        "phone E.164",  # the leftmost match: "+1" and TELNYX_FROM's ten digits
    }
    assert {h.where for h in second} == {f"{log}:3"}
    assert scanner.lines == 3

    # A log record, through a plain handler: the Basic header Twilio auth builds is found.
    basic = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    raw, redacted = io.StringIO(), io.StringIO()
    logger = logging.getLogger("r23.planted")
    logger.propagate = False  # not into this test's own (scanned) in-process log
    logger.setLevel(logging.DEBUG)
    handlers = [logging.StreamHandler(raw), redacting_handler(redacted, "json")]
    for handler in handlers:
        logger.addHandler(handler)
    try:
        logger.debug("media %s auth %s to %s", SIGNED_URL, basic, numbers.VOXO_DIALED)
        logger.debug("token Bearer %s key=%s", "opaque-token-0123", API_KEY)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
    record_hits = scanner.scan_text(raw.getvalue(), "record")
    assert {h.label for h in record_hits} == {
        "URL query string",
        "secret CALLREC_TWILIO_AUTH_TOKEN (Basic header)",
        "phone VOXO_DIALED",
        "bearer token",
        "secret CALLREC_TELNYX_API_KEY",
    }
    # The product's handler redacts the shapes (query strings, Bearer values, numbers); a raw
    # secret it cannot know must never be logged in the first place.
    assert {h.label for h in scanner.scan_text(redacted.getvalue(), "product")} == {
        "secret CALLREC_TWILIO_AUTH_TOKEN (Basic header)",
        "secret CALLREC_TELNYX_API_KEY",
    }

    # A Sentry event, sent by a real sentry-sdk client over HTTP to a local receiver.
    receiver = SentryReceiver().start()
    try:
        client = sentry_sdk.Client(dsn=receiver.dsn, default_integrations=False)
        with sentry_sdk.new_scope() as scope:
            scope.set_client(client)
            scope.set_extra("caller", numbers.VOXO_DIALED)
            query = SIGNED_URL.partition("?")[2]  # kept apart from the URL, as sentry-sdk does
            scope.add_breadcrumb(type="http", category="httplib", data={"http.query": query})
            scope.set_extra("note", f"retrying with {TWILIO_TOKEN}")  # "auth" is scrubbed
            sentry_sdk.capture_message("planted")
        client.flush(timeout=5)
        client.close()
        wait_for(receiver.events, 10, 0.1, "the planted Sentry event")
        sentry_hits = scanner.scan_envelopes(list(receiver.raw), "planted Sentry")
    finally:
        receiver.stop()
    assert scanner.events == 1
    assert {h.label for h in sentry_hits} >= {
        "phone VOXO_DIALED",
        "secret CALLREC_TWILIO_AUTH_TOKEN",
        "signed URL parameter",  # the bare query of the breadcrumb
    }

    every = first + second + record_hits + sentry_hits
    printed = "\n".join(map(str, every))
    for secret in (API_KEY, TWILIO_TOKEN, basic, "ab" * 32, numbers.TELNYX_FROM):
        assert secret not in printed
    assert "«secret CALLREC_TELNYX_API_KEY #" in printed


# -- a stack with every provider's secrets, going through errors -----------------------------

FAST = {
    "CALLREC_MAX_ATTEMPTS": "3",
    "CALLREC_RETRY_BASE_SECONDS": "0.2",
    "CALLREC_RETRY_MAX_SECONDS": "1",
}


def _sha(source: AudioSource) -> str:
    return hashlib.sha256(source.read()).hexdigest()


@pytest.fixture
def providers() -> Iterator[tuple[TwilioEmulator, QuoEmulator, VoxoEmulator, VoiceGenieEmulator]]:
    with (
        TwilioEmulator() as twilio,
        QuoEmulator() as quo,
        VoxoEmulator() as voxo,
        VoiceGenieEmulator() as voicegenie,
    ):
        yield twilio, quo, voxo, voicegenie


def test_r23_faulty_stack_with_every_secret_leaks_nothing(
    tmp_path: Path,
    sentry_receiver: SentryReceiver,
    providers: tuple[TwilioEmulator, QuoEmulator, VoxoEmulator, VoiceGenieEmulator],
) -> None:
    twilio, quo, voxo, voicegenie = providers
    quo_sender = QuoWebhookSender()
    stack = start_stack(
        tmp_path,
        **twilio.settings_env(),
        **quo.settings_env(quo_sender),
        **voxo.settings_env(),
        **voicegenie.settings_env(),
        CALLREC_STATUS_BASIC_AUTH="ops:canary-status-password",
        CALLREC_SENTRY_DSN=sentry_receiver.dsn,
        **FAST,
    )
    try:
        sent = _drive(stack, twilio, quo, quo_sender, voxo, voicegenie)
        for key in sent:
            stack.wait_final(key, timeout=60)
        result = tally(stack.sessions, stack.storage, sent)
        print(f"R23 tally: {result.line()}")
        assert result.clean, result.details
        assert result.failed_with_reason == 3  # the 404, the 500s, the absent Twilio recording
        wait_for(lambda: len(sentry_receiver.events()) >= 3, 20, 0.2, "the failures' events")
    finally:
        stack.close()  # processes exit and flush their Sentry events

    # The same scan the canary runs after every fault test, here with its figures asserted.
    scanner = Scanner()
    scanner.canaries.add_env({**os.environ, **stack.env})
    hits = []
    for process in stack.processes:
        scanner.watch(process.log_path)
    hits += scanner.scan_files()
    hits += scanner.scan_envelopes(list(sentry_receiver.raw), "Sentry")
    print(
        f"R23 stack scan: {scanner.lines} log lines, {scanner.events} sentry events, "
        f"{len(scanner.canaries)} canaries, {len(hits)} hits"
    )
    assert not hits, "\n".join(map(str, hits[:30]))
    assert scanner.events >= 3
    assert scanner.lines > 100  # DEBUG lines of the worker, relay and beat
    debug_lines = sum(log.read_text().count('"level": "debug"') for log in _logs(stack))
    assert debug_lines > 0, "the processes did not log at DEBUG"


def _logs(stack: Stack) -> list[Path]:
    return [process.log_path for process in stack.processes]


def _state(stack: Stack, key: str) -> str | None:
    row = stack.row(key)
    return None if row is None else row.state


def _drive(
    stack: Stack,
    twilio: TwilioEmulator,
    quo: QuoEmulator,
    quo_sender: QuoWebhookSender,
    voxo: VoxoEmulator,
    voicegenie: VoiceGenieEmulator,
) -> dict[str, str | None]:
    """Send every kind of traffic with its fault; return the tally's ``sent`` (ledger
    ``recording_key`` → sha256 of the audio, None for those that must fail)."""
    telnyx = stack.emulator
    sent: dict[str, str | None] = {}

    def telnyx_rec() -> EmulatedRecording:
        rec = telnyx.add_recording(size=20_000)
        stack.announce(rec)
        sent[rec.id] = _sha(rec.audio())
        stack.wait_final(rec.id, timeout=60)  # before the next fault, which it would take
        return rec

    telnyx.inject("audio", "expired")  # a fresh URL within the attempt
    telnyx_rec()
    telnyx.inject("api", "429", retry_after=1)  # waited out, then stored
    telnyx_rec()
    gone = telnyx.add_recording()
    body = stack.signer.recording_saved_body(gone)
    telnyx.remove_recording(gone.id)  # the API answers 404: failed for good
    assert stack.send(body).status_code == 200
    sent[gone.id] = None
    # Audio answering 500 on every attempt: failed for good, its last download in the
    # breadcrumbs of the failure's event.
    telnyx.inject("audio", "500", times=int(FAST["CALLREC_MAX_ATTEMPTS"]))
    sent[telnyx_rec().id] = None

    signer = TwilioCallbackSigner(twilio.auth_token)
    url = f"{stack.web_url}/webhooks/twilio"
    stored, absent = twilio.add_recording(size=16_000), twilio.add_recording()
    for rec, extra in ((stored, {}), (absent, {"status": "absent", "error_code": 16101})):
        body, headers = signer.sign(url, callback_params(rec, **extra))  # type: ignore[arg-type]
        response = httpx.post(url, content=body, headers=headers, timeout=20)
        assert response.status_code == 200, response.text
        sent[rec.sid] = None if extra else _sha(rec.audio())

    call = quo.add_call(size=16_000)
    response = quo_sender.post(f"{stack.web_url}/webhooks/quo", call_event_body(call))
    assert response.status_code == 200, response.text
    for segment in call.recordings:
        sent[segment.id] = _sha(segment.audio())

    # VOXO and VoiceGenie are listed (what the reconciler does), then captured by the worker.
    now = datetime.now(UTC)
    voxo_rec = voxo.add_recording(now - timedelta(minutes=5), size=16_000)
    vg_rec = voicegenie.add_recording(size=16_000)
    with new_http_client(10) as http:
        accounts = Accounts(settings_from(stack.env), http)
        for name in ("voxo", "voicegenie"):
            refs = list(accounts.provider(name).list_recordings(now - timedelta(hours=1), now))
            accept_refs(stack.sessions, name, "default", refs, source="poll")
    sent[voxo_rec.unique_id] = _sha(voxo_rec.audio())
    sent[vg_rec.call_uuid] = _sha(vg_rec.audio())
    return sent
