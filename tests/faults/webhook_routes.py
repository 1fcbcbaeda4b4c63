"""Every webhook route ingest serves, with a signer per route, for the hostile-input suite.

``webhook_service`` runs the real Flask app (``create_app``) over real HTTP on loopback
(``LoopbackServer``), with a default account for every provider and an ``east`` account (its
own key) for each provider that sends webhooks. A ``Route`` knows how its provider signs a
body, which headers carry the signature, and how to make a fresh capturable event, so one
property test covers every route.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from flask import Flask
from nacl.signing import SigningKey
from sqlalchemy import func, select

from emulators.quo import QuoWebhookSender
from emulators.server import LoopbackServer
from emulators.telnyx import TelnyxWebhookSigner, recording_saved_body
from emulators.twilio import TwilioCallbackSigner
from ingest.app import create_app
from ledger import Delivery, Recording, migrate
from tests.fixtures.callrec import base_env, settings_from

__all__ = [
    "BAD_SIGNATURE",
    "FORM",
    "ROUTES",
    "Headers",
    "InputMeter",
    "Route",
    "WebhookService",
    "refused_shortly",
    "webhook_service",
]

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads"
PUBLIC_BASE = "https://calls.example.com"  # CALLREC_PUBLIC_BASE_URL: the URL Twilio signs
FORM = "application/x-www-form-urlencoded"
#: The one answer to every signature failure, unknown account and wrong-account signature.
BAD_SIGNATURE = {"error": "signature verification failed"}

Headers = list[tuple[str, str | bytes]]

TELNYX = {"default": TelnyxWebhookSigner(SigningKey(b"\x11" * 32))}
TELNYX["east"] = TelnyxWebhookSigner(SigningKey(b"\x12" * 32))
QUO = {"default": QuoWebhookSender(signing_key=b"\x21" * 32, webhook_secret=b"\x22" * 24)}
QUO["east"] = QuoWebhookSender(signing_key=b"\x23" * 32, webhook_secret=b"\x24" * 24)
TWILIO = {"default": TwilioCallbackSigner("a" * 32), "east": TwilioCallbackSigner("b" * 32)}
OTHER = {"default": "east", "east": "default"}


def _telnyx_json_body() -> bytes:
    return recording_saved_body(event_id=f"hostile-{secrets.token_hex(8)}")


def _texml_body() -> bytes:
    form = dict(parse_qsl((PAYLOADS / "telnyx" / "texml.recording.completed.form").read_text()))
    form["RecordingSid"] = f"hostile-{secrets.token_hex(8)}"
    return urlencode(form).encode()


def _twilio_body() -> bytes:
    form = dict(parse_qsl((PAYLOADS / "twilio" / "recording.completed.form").read_text()))
    form["RecordingSid"] = "RE" + secrets.token_hex(16)
    return urlencode(form).encode()


def _quo_body() -> bytes:
    return QuoWebhookSender.call_event_body(event_id=f"EV{secrets.token_hex(8)}")


def _telnyx_signer(content_type: str) -> Callable[[str, str, bytes, int], Headers]:
    def sign(account: str, path: str, body: bytes, ts: int) -> Headers:
        headers = TELNYX[account].headers(body, ts)
        return [
            *((k, v) for k, v in headers.items() if k != "content-type"),
            ("content-type", content_type),
        ]

    return sign


def _quo_legacy(account: str, path: str, body: bytes, ts: int) -> Headers:
    return list(QUO[account].legacy_headers(body, ts * 1000).items())


def _quo_standard(account: str, path: str, body: bytes, ts: int) -> Headers:
    return list(QUO[account].standard_headers(body, timestamp=ts).items())


def _twilio(account: str, path: str, body: bytes, ts: int) -> Headers:
    params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    signature = TWILIO[account].signature(PUBLIC_BASE + path, params)
    return [("content-type", FORM), ("x-twilio-signature", signature)]


@dataclass(frozen=True)
class Route:
    """One webhook route as a provider uses it.

    ``sign(account, path, body, ts)`` gives the headers a real delivery of ``body`` carries
    (content type included) signed with ``account``'s key at unix time ``ts``;
    ``signature_headers`` are the ones whose loss, duplication or damage must give 401;
    ``timestamped``: whether the signature covers a timestamp (Twilio's does not).
    """

    name: str
    provider: str
    account: str
    content_type: str
    sign_as: Callable[[str, str, bytes, int], Headers]
    new_body: Callable[[], bytes]
    signature_headers: tuple[str, ...]
    timestamped: bool = True

    @property
    def path(self) -> str:
        suffix = "" if self.account == "default" else f"/{self.account}"
        return f"/webhooks/{self.provider}{suffix}"

    def sign(self, body: bytes, ts: int, account: str | None = None) -> Headers:
        return self.sign_as(account or self.account, self.path, body, ts)

    def wrong_account(self) -> str:
        return OTHER[self.account]


def _routes() -> tuple[Route, ...]:
    telnyx_headers = ("telnyx-signature-ed25519", "telnyx-timestamp")
    standard_headers = ("webhook-id", "webhook-timestamp", "webhook-signature")
    routes = []
    for account in ("default", "east"):
        routes += [
            Route(
                f"telnyx-json@{account}", "telnyx", account, "application/json",
                _telnyx_signer("application/json"), _telnyx_json_body, telnyx_headers,
            ),
            Route(
                f"telnyx-texml@{account}", "telnyx", account, FORM,
                _telnyx_signer(FORM), _texml_body, telnyx_headers,
            ),
            Route(
                f"quo-legacy@{account}", "quo", account, "application/json",
                _quo_legacy, _quo_body, ("openphone-signature",),
            ),
            Route(
                f"quo-standard@{account}", "quo", account, "application/json",
                _quo_standard, _quo_body, standard_headers,
            ),
            Route(
                f"twilio@{account}", "twilio", account, FORM,
                _twilio, _twilio_body, ("x-twilio-signature",), timestamped=False,
            ),
        ]  # fmt: skip
    return tuple(routes)


ROUTES = _routes()


def _accounts_file(folder: Path) -> Path:
    path = folder / "accounts.toml"
    telnyx, quo, twilio = TELNYX["east"], QUO["east"], TWILIO["east"]
    path.write_text(
        "[[accounts]]\nprovider = 'telnyx'\nname = 'east'\n"
        f"credentials = {{ public_key = '{telnyx.public_key_b64}' }}\n"
        "[[accounts]]\nprovider = 'quo'\nname = 'east'\n"
        f"credentials = {{ signing_key = '{quo.signing_key_b64}', "
        f"webhook_secret = '{quo.webhook_secret}' }}\n"
        "[[accounts]]\nprovider = 'twilio'\nname = 'east'\n"
        f"credentials = {{ account_sid = 'AC{'0' * 32}', auth_token = '{twilio.auth_token}' }}\n"
        "[[accounts]]\nprovider = 'voicegenie'\nname = 'east'\n"
        "credentials = { api_key = 'vg-east' }\n"
    )
    return path


class _CountedInput:
    """A request body stream that counts the bytes the app read from it."""

    def __init__(self, stream: Any, meter: InputMeter) -> None:
        self._stream = stream
        self._meter = meter

    def read(self, *args: Any) -> bytes:
        data: bytes = self._stream.read(*args)
        self._meter.read_bytes += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data: bytes = self._stream.readline(*args)
        self._meter.read_bytes += len(data)
        return data

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


class InputMeter:
    """WSGI middleware: how many body bytes the app read (buffered) in the last request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.read_bytes = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.read_bytes = 0
        environ["wsgi.input"] = _CountedInput(environ["wsgi.input"], self)
        return self.app(environ, start_response)


class WebhookService:
    """The app on loopback, an HTTP client to it, and the ledger counts to compare."""

    def __init__(
        self, app: Flask, server: LoopbackServer, broker_file: Path, meter: InputMeter
    ) -> None:
        self.app = app
        self.meter = meter
        self.server = server
        self.broker_file = broker_file
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.clock_offset = 0.0  # seconds added to the app's receive clock (replay tests)

    def now(self) -> float:
        """The app's receive clock: real time moved by ``clock_offset``."""
        return time.time() + self.clock_offset

    def post(self, path: str, body: bytes, headers: Headers) -> httpx.Response:
        return self.http.post(path, content=body, headers=headers)

    def rows(self) -> tuple[int, int]:
        """(deliveries, recordings): what the relay would ever publish is a recordings row."""
        with self.app.extensions["callrec"].sessions() as session:
            return tuple(  # type: ignore[return-value]
                int(session.execute(select(func.count()).select_from(model)).scalar_one())
                for model in (Delivery, Recording)
            )

    @contextlib.contextmanager
    def writes_nothing(self) -> Iterator[None]:
        """Assert the block adds no delivery and no recording row (so nothing can be queued)."""
        before = self.rows()
        yield
        assert self.rows() == before, "a refused webhook wrote to the ledger"


def refused_shortly(response: httpx.Response) -> dict[str, object]:
    """A 4xx whose JSON body is one short reason; returns that body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    document = response.json()
    assert set(document) == {"error"}, document
    assert isinstance(document["error"], str) and 0 < len(document["error"]) <= 200, document
    return document


@contextlib.contextmanager
def webhook_service(folder: Path) -> Iterator[WebhookService]:
    """Every provider configured (default and ``east`` accounts), served over real HTTP."""
    env = base_env(
        folder,
        CALLREC_TELNYX_PUBLIC_KEY=TELNYX["default"].public_key_b64,
        CALLREC_QUO_SIGNING_KEY=QUO["default"].signing_key_b64,
        CALLREC_QUO_WEBHOOK_SECRET=QUO["default"].webhook_secret,
        CALLREC_TWILIO_ACCOUNT_SID="AC" + "1" * 32,
        CALLREC_TWILIO_AUTH_TOKEN=TWILIO["default"].auth_token,
        CALLREC_VOICEGENIE_API_KEY="vg-default",
        CALLREC_PUBLIC_BASE_URL=PUBLIC_BASE,
        CALLREC_ACCOUNTS_FILE=str(_accounts_file(folder)),
        CALLREC_LOG_LEVEL="warning",
    )
    settings = settings_from(env)
    migrate(settings.database_url)
    app = create_app(settings)
    meter = InputMeter(app.wsgi_app)
    app.wsgi_app = meter  # type: ignore[method-assign]
    with LoopbackServer(app) as server:
        service = WebhookService(app, server, folder / "broker.sqlite", meter)
        app.extensions["callrec"].clock = service.now
        try:
            yield service
        finally:
            service.http.close()
