"""The end-to-end stack of ``stack.py`` with the Quo emulator and webhook sender plugged in.

``start_stack`` takes the Quo settings as overrides, so the web app, worker, relay, ledger and
storage are the shared ones; this adds the Quo side.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import httpx
from sqlalchemy import select

from emulators.quo import QuoCall, QuoEmulator, QuoWebhookSender, Scheme, Shape
from ledger import FINAL_STATES, Recording, RecordingEvent
from storage import recording_key
from tests.e2e.stack import Stack, start_stack_with


@dataclass
class QuoStack:
    base: Stack
    emulator: QuoEmulator
    sender: QuoWebhookSender

    def send(
        self, body: bytes, scheme: Scheme = "legacy", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        url = f"{self.base.web_url}/webhooks/quo"
        if headers is None:
            return self.sender.post(url, body, scheme)
        return httpx.post(url, content=body, headers=headers, timeout=20)

    def announce(
        self,
        call: QuoCall,
        event_type: str = "call.recording.completed",
        *,
        shape: Shape = "object",
        scheme: Scheme = "legacy",
    ) -> str:
        """Deliver the event; return the key of the lookup row it creates."""
        body = self.sender.call_event_body(call, event_type=event_type, shape=shape)
        response = self.send(body, scheme)
        assert response.status_code == 200, response.text
        return lookup_key(call.id, event_type)

    def wait_state(
        self, key: str, states: Collection[str] = FINAL_STATES, timeout: float = 45
    ) -> Recording:
        return self.base.wait_final(key, timeout, states)

    def detail(self, row: Recording) -> str | None:
        """The detail of the row's latest transition (e.g. what a lookup resolved into)."""
        with self.base.sessions() as session:
            return session.execute(
                select(RecordingEvent.detail)
                .where(RecordingEvent.recording_id == row.id)
                .order_by(RecordingEvent.id.desc())
                .limit(1)
            ).scalar_one_or_none()

    def close(self) -> None:
        self.base.close()
        self.emulator.stop()


def lookup_key(call_id: str, event_type: str) -> str:
    return f"lookup:call_id={call_id}&event={event_type}"


def audio_key(recording_id: str) -> str:
    return recording_key("quo", "default", recording_id, "mp3")


def start_quo_stack(tmp_path: Path, **overrides: str) -> QuoStack:
    emulator = QuoEmulator().start()
    sender = QuoWebhookSender()
    base = start_stack_with(
        emulator,
        tmp_path,
        **emulator.settings_env(sender),
        **overrides,
    )
    return QuoStack(base, emulator, sender)
