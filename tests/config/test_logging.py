"""The process log handler (``configure_logging``) on real traffic: a Twilio webhook, captures
and a poll against the Twilio emulator over loopback HTTP, with the auth token, signed media
URLs and phone numbers in play. Every line is JSON with its context; none holds a secret."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.logging import configure_logging, log_context
from emulators.server import LoopbackServer
from emulators.twilio import TwilioCallbackSigner, TwilioEmulator, callback_params
from ingest.app import create_app
from ledger import State, migrate
from tests.fixtures.callrec import base_env, settings_from
from workers.capture import capture
from workers.reconcile import poll_account
from workers.runtime import build_runtime

PHONES = ("+15551230000", "+15557650000")
PHONE_FIELDS = [
    ("From", PHONES[0]),
    ("To", PHONES[1]),
    ("Caller", PHONES[0]),
    ("Called", PHONES[1]),
]


@pytest.fixture
def process_log(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[str, str], str]]:
    """Install the process handler (as web and worker do) writing to the captured stderr;
    the returned function configures it and later reads what it wrote."""
    root = logging.getLogger()
    level = root.level

    def configure_or_read(level_name: str = "", fmt: str = "") -> str:
        if level_name:
            configure_logging(level_name, fmt)
            return ""
        return capsys.readouterr().err

    yield configure_or_read
    for handler in list(root.handlers):
        if getattr(handler, "_callrec", False):
            root.removeHandler(handler)
    root.setLevel(level)


def test_webhook_capture_and_poll_log_no_secret_url_or_phone_number(
    tmp_path: Path, process_log: Callable[..., str]
) -> None:
    process_log("debug", "json")
    with TwilioEmulator() as emulator:
        settings = settings_from(base_env(tmp_path, **emulator.settings_env()))
        migrate(settings.database_url)
        server = LoopbackServer(create_app(settings)).start()
        runtime = build_runtime(settings, lambda _id, _countdown, _lane: None)
        try:
            url = f"{server.url}/webhooks/twilio"
            signer = TwilioCallbackSigner(emulator.auth_token)
            stored, absent = emulator.add_recording(), emulator.add_recording()
            ids = []
            for rec in (stored, absent):
                params = callback_params(rec, emulator.base_url, extra=PHONE_FIELDS)
                body, headers = signer.sign(url, params)
                response = httpx.post(url, content=body, headers=headers)
                assert response.status_code == 200
                ids += response.json()["recordings"]
            forged = {**headers, "X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}
            assert httpx.post(url, content=body, headers=forged).status_code == 401
            emulator.set_status(absent.sid, "absent", error_code=13617)
            assert [capture(runtime, i).state for i in ids] == [State.STORED, State.FAILED]
            assert capture(runtime, ids[0]).state == "skipped"
            assert poll_account(runtime, "twilio", "default").status == "polled"
            signed_media = [f"{emulator.base_url}{rec.path}" for rec in (stored, absent)]
        finally:
            server.stop()
            runtime.close()
    output = process_log()

    entries = [json.loads(line) for line in output.splitlines()]  # every line is one JSON event
    loggers = {entry["logger"] for entry in entries}
    assert {"ingest.webhooks", "workers.capture", "workers.reconcile"} <= loggers
    basic = base64.b64encode(f"{emulator.account_sid}:{emulator.auth_token}".encode()).decode()
    for forbidden in (emulator.auth_token, basic, *PHONES, *(p.lstrip("+") for p in PHONES)):
        assert forbidden not in output
    assert all(media not in output for media in signed_media)
    for entry in entries:
        _assert_context(entry)


def _assert_context(entry: dict[str, Any]) -> None:
    """Webhook and poll lines name provider and account (an accepted webhook its recordings);
    capture lines also the recording and the attempt (only the ledger id before a claim)."""
    wanted = {
        "ingest.webhooks": {"provider", "account"},
        "workers.reconcile": {"provider", "account"},
        "workers.capture": {"recording", "provider", "account", "attempt"},
    }.get(entry["logger"], set())
    if "not claimable" in entry["msg"]:
        wanted = {"recording"}
    if entry["msg"].startswith("webhook recording.completed: accepted"):
        wanted = {"provider", "account", "recordings"}
    assert wanted <= entry.keys(), entry


def test_text_on_a_terminal_is_one_readable_line_with_its_context(
    process_log: Callable[..., str],
) -> None:
    process_log("info", "text")
    with log_context(recording=7, provider="telnyx", account="east", attempt=2):
        logging.getLogger("workers.capture").info(
            "download of https://media.example/r.mp3?X-Amz-Signature=abc for +15551230000 cut"
        )
    (line,) = process_log().splitlines()
    assert "INFO    workers.capture: download of https://media.example/r.mp3?[redacted]" in line
    assert line.endswith("for [phone] cut [recording=7 provider=telnyx account=east attempt=2]")
