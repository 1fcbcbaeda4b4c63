"""``make demo``: callrec end to end on this machine, no provider account needed.

Starts the Telnyx and Twilio emulators (in this process) and callrec's ``web`` (gunicorn),
``worker``, ``relay`` and ``beat`` processes on the embedded defaults (SQLite ledger and broker,
recordings on disk) in one folder (``./var/demo``), sends signed webhooks for a few recordings
(and one Twilio callback for a recording that is ``absent``, so the status page has a failure to
re-drive), waits until they are final and prints where the audio landed and the status page's
URL and demo credentials. Then it runs until Ctrl-C, and stops everything it started;
``--once`` stops right after printing (what the test does).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from config.redact import redact
from emulators.sandbox import ManagedProcess, sandbox_env, wait_until
from emulators.telnyx import TelnyxEmulator, TelnyxWebhookSigner
from emulators.twilio import TwilioCallbackSigner, TwilioEmulator, callback_params

__all__ = ["main"]

DEMO_USER, DEMO_PASSWORD = "demo", "demo"
FINAL = ("stored", "failed", "resolved")
CELERY = ["celery", "-A", "workers.celery_app"]
PROCESSES: dict[str, tuple[list[str], str]] = {
    # name: (argv after ``python -m``, the log line that says it is ready)
    "worker": (
        [*CELERY, "worker", "--concurrency", "2", "--loglevel", "INFO", "--without-mingle"],
        "ready",
    ),
    "relay": (["callrec_cli", "relay"], "relay started"),
    "beat": (
        [*CELERY, "beat", "--loglevel", "INFO", "--schedule"],
        "beat: Starting",
    ),
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Demo:
    """Everything the demo started, stopped in reverse order by :meth:`close`."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._stops: list[Callable[[], None]] = []
        self.processes: list[ManagedProcess] = []
        self.telnyx = self._started(TelnyxEmulator())
        self.twilio = self._started(TwilioEmulator())
        self.telnyx_signer = TelnyxWebhookSigner()
        self.env = sandbox_env(
            folder,
            CALLREC_STATUS_BASIC_AUTH=f"{DEMO_USER}:{DEMO_PASSWORD}",
            CALLREC_LOG_FORMAT="text",
            CALLREC_TELNYX_PUBLIC_KEY=self.telnyx_signer.public_key_b64,
            CALLREC_TELNYX_API_KEY=self.telnyx.api_key,
            CALLREC_TELNYX_API_BASE=self.telnyx.base_url,
            CALLREC_TELNYX_AUDIO_HOSTS=self.telnyx.audio_host,
            **self.twilio.settings_env(),
        )

    def _started(self, emulator: Any) -> Any:
        emulator.start()
        self._stops.append(emulator.stop)
        return emulator

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        process = ManagedProcess(
            [sys.executable, "-m", *argv],
            log_path=logs / f"{name}.log",
            env={**os.environ, **self.env},
            cwd=self.folder,
            name=name,
        )
        self.processes.append(process)
        self._stops.append(process.stop)
        return process

    def start_service(self, timeout: float = 60) -> None:
        from ledger import migrate

        migrate(self.env["CALLREC_DATABASE_URL"])
        web = self._spawn(
            "web",
            ["gunicorn", "--bind", f"127.0.0.1:{self.port}", "--threads", "4", "ingest.wsgi:app"],
        )
        waiting = {web: "/healthz"}
        for name, (argv, marker) in PROCESSES.items():
            extra = [str(self.folder / "beat-schedule")] if name == "beat" else []
            waiting[self._spawn(name, argv + extra)] = marker

        def ready() -> bool:
            for process, marker in list(waiting.items()):
                if not process.alive():
                    raise RuntimeError(f"{process.name} exited:\n{process.log_tail(30)}")
                if marker == "/healthz":
                    with contextlib.suppress(httpx.HTTPError):
                        if httpx.get(self.url + marker, timeout=2).status_code == 200:
                            del waiting[process]
                elif marker in process.log_path.read_text(errors="replace"):
                    del waiting[process]
            return not waiting

        wait_until(ready, timeout, 0.2, "callrec's processes to start")

    def send_webhooks(self, recordings: int) -> list[tuple[str, str]]:
        """Announce ``recordings`` Telnyx and Twilio recordings and one absent Twilio one."""
        sent: list[tuple[str, str]] = []
        for _ in range(recordings):
            rec = self.telnyx.add_recording(size=96_000, duration_millis=12_000)
            body = self.telnyx_signer.recording_saved_body(rec)
            self._post("/webhooks/telnyx", body, self.telnyx_signer.headers(body))
            sent.append(("telnyx", rec.id))
        signer = TwilioCallbackSigner(self.twilio.auth_token)
        recs = [self.twilio.add_recording(size=128_000) for _ in range(recordings)]
        recs.append(self.twilio.add_recording(status="absent", error_code=16101))
        for rec in recs:
            body, headers = signer.sign(self.url + "/webhooks/twilio", callback_params(rec))
            self._post("/webhooks/twilio", body, headers)
            sent.append(("twilio", rec.sid))
        return sent

    def _post(self, path: str, body: bytes, headers: dict[str, str]) -> None:
        response = httpx.post(self.url + path, content=body, headers=headers, timeout=20)
        if response.status_code != 200:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:200]}")

    def wait_final(self, sent: list[tuple[str, str]], timeout: float = 90) -> list[Any]:
        from ledger import Recording, make_engine, make_session_factory

        engine = make_engine(self.env["CALLREC_DATABASE_URL"])
        sessions = make_session_factory(engine)
        keys = [key for _, key in sent]

        def rows() -> list[Any]:
            with sessions() as session:
                found = list(
                    session.execute(
                        select(Recording).where(Recording.recording_key.in_(keys))
                    ).scalars()
                )
            done = len(found) == len(keys) and all(row.state in FINAL for row in found)
            return sorted(found, key=lambda row: row.id) if done else []

        try:
            return wait_until(rows, timeout, 0.25, "the recordings to be captured")
        finally:
            engine.dispose()

    def close(self) -> None:
        while self._stops:
            with contextlib.suppress(Exception):
                self._stops.pop()()


@contextlib.contextmanager
def running(folder: Path, port: int) -> Iterator[Demo]:
    demo = Demo(folder, port)
    try:
        yield demo
    finally:
        demo.close()


def _report(demo: Demo, rows: list[Any]) -> None:
    root = Path(demo.env["CALLREC_STORAGE_URL"].removeprefix("file://"))
    print(f"\nLedger: {demo.folder / 'ledger.sqlite'}   logs: {demo.folder / 'logs'}")
    for row in rows:
        if row.state == "stored":
            where = f"{row.size_bytes:>8} bytes  {root / row.storage_key}"
        else:
            where = f"{row.recording_key}: {redact(row.last_error or '')}"
        print(f"  {row.state:<7} {row.provider:<7} {where}")
    print(
        f"\nStatus page: {demo.url}/status   (user {DEMO_USER!r}, password {DEMO_PASSWORD!r})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.demo", description=__doc__)
    parser.add_argument("--folder", type=Path, default=Path("var/demo"), help="its own folder")
    parser.add_argument("--port", type=int, default=8000, help="web port (0: a free one)")
    parser.add_argument("--recordings", type=int, default=3, help="recordings per provider")
    parser.add_argument("--once", action="store_true", help="exit once they are captured")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # Ctrl-C (even when started with SIGINT ignored, as a background job) and SIGTERM stop
    # the demo wherever it is; ``running`` then stops everything it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with running(folder, args.port) as demo:
        try:
            print(f"Starting callrec in {folder} (web on {demo.url}) …", flush=True)
            demo.start_service()
            started = time.monotonic()
            sent = demo.send_webhooks(args.recordings)
            print(f"Sent {len(sent)} signed webhooks; waiting for the captures …", flush=True)
            rows = demo.wait_final(sent)
            print(f"All final in {time.monotonic() - started:.1f} s.")
            _report(demo, rows)
            if not args.once:
                print("Ctrl-C stops the demo and everything it started.", flush=True)
                threading.Event().wait()
        except KeyboardInterrupt:
            pass
        except (RuntimeError, TimeoutError) as exc:
            print(f"demo failed: {exc}", file=sys.stderr)
            for process in demo.processes:
                print(f"--- {process.name} ---\n{process.log_tail(15)}", file=sys.stderr)
            return 1
        print("Stopping …", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
