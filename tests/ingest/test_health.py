"""``/healthz`` and ``/readyz`` over real HTTP: each dependency down in turn gives a 503 that
names it, and a hung one answers within the check's time limit."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from emulators.server import LoopbackServer
from ingest.app import create_app
from ledger import migrate
from tests.fixtures.callrec import base_env, settings_from


def _serve(tmp_path: Path, **overrides: str) -> LoopbackServer:
    env = base_env(tmp_path, CALLREC_READYZ_TIMEOUT_SECONDS="1", **overrides)
    settings = settings_from(env)
    if settings.database_url.startswith("sqlite"):
        migrate(settings.database_url)
    return LoopbackServer(create_app(settings)).start()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., str]]:
    servers: list[LoopbackServer] = []

    def start(**overrides: str) -> str:
        server = _serve(tmp_path, **overrides)
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def _ready(url: str) -> tuple[int, dict[str, str]]:
    response = httpx.get(f"{url}/readyz", timeout=10)
    return response.status_code, response.json()["checks"]


def test_healthz_and_readyz_when_everything_is_up(serve: Callable[..., str]) -> None:
    url = serve()
    assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    assert _ready(url) == (200, {"ledger": "ok", "broker": "ok", "storage": "ok"})


def test_ledger_down(serve: Callable[..., str]) -> None:
    status, checks = _ready(serve(CALLREC_DATABASE_URL="postgresql://callrec@127.0.0.1:9/none"))
    assert status == 503
    assert checks["ledger"].startswith("unreachable (")
    assert (checks["broker"], checks["storage"]) == ("ok", "ok")


def test_broker_down(serve: Callable[..., str]) -> None:
    status, checks = _ready(serve(CALLREC_BROKER_URL="redis://127.0.0.1:9/0"))
    assert status == 503
    assert checks["broker"].startswith("unreachable (")
    assert (checks["ledger"], checks["storage"]) == ("ok", "ok")


def test_disk_storage_gone(serve: Callable[..., str], tmp_path: Path) -> None:
    url = serve()
    assert _ready(url)[0] == 200
    shutil.rmtree(tmp_path / "recordings")
    status, checks = _ready(url)
    assert status == 503
    assert checks == {"ledger": "ok", "broker": "ok", "storage": "unreachable (StorageUnavailable)"}
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # alive, just not ready


@pytest.mark.s3
def test_s3_storage_missing_bucket_and_hung_endpoint(
    serve: Callable[..., str], moto_server: str
) -> None:
    status, checks = _ready(
        serve(CALLREC_STORAGE_URL="s3://no-such-bucket/x", CALLREC_S3_ENDPOINT_URL=moto_server)
    )
    assert status == 503 and checks["storage"] == "unreachable (StorageUnavailable)"
    # A server that accepts connections and never answers: the check is cut at its time limit.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}"
        url = serve(CALLREC_STORAGE_URL="s3://bucket/x", CALLREC_S3_ENDPOINT_URL=endpoint)
        started = time.monotonic()
        status, checks = _ready(url)
        assert time.monotonic() - started < 15  # cut at 1 s; botocore alone would wait a minute
    assert status == 503
    assert checks == {"ledger": "ok", "broker": "ok", "storage": "timed out after 1s"}
