"""``LoopbackServer(keep_alive=True)``: connections stay open, yet request bodies and cut
responses behave as with werkzeug's ``Connection: close``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import httpx
import pytest

from emulators.server import LoopbackServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def _app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """``/port``: the client's port; ``/half``: reads half the body; ``/cut``: a short body."""
    path = environ["PATH_INFO"]
    if path == "/half":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"].read(length // 2)
    if path == "/cut":
        start_response("200 OK", [("Content-Length", "10")])
        return [b"12345"]
    body = str(environ["REMOTE_PORT"]).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]  # as werkzeug's Response


def test_keep_alive_reuses_one_connection_across_requests_and_bodies() -> None:
    with (
        LoopbackServer(_app, keep_alive=True) as server,
        httpx.Client(base_url=server.url, timeout=5) as client,
    ):
        first = client.get("/port")
        assert "connection" not in first.headers
        # A body the app reads only half of must not be taken for the next request.
        half = client.post("/half", content=b"x" * 100_000)
        assert half.status_code == 200
        head = client.head("/port")
        assert head.status_code == 200
        ports = {first.text, half.text, client.get("/port").text}
        assert len(ports) == 1


def test_keep_alive_still_cuts_a_short_body() -> None:
    with (
        LoopbackServer(_app, keep_alive=True) as server,
        httpx.Client(base_url=server.url, timeout=5) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/cut")
        assert client.get("/port").status_code == 200  # a new connection


def test_default_closes_every_connection() -> None:
    with (
        LoopbackServer(_app) as server,
        httpx.Client(base_url=server.url, timeout=5) as client,
    ):
        response = client.get("/port")
        assert response.headers["connection"] == "close"
        assert client.get("/port").text != response.text
