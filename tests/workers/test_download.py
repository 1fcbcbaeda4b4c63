"""Streaming audio over real HTTP: redirects re-checked, lengths enforced, errors typed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from emulators.server import LoopbackServer
from emulators.telnyx import TelnyxEmulator
from providers.base import Download
from providers.errors import PermanentFailure, RetryLater, UrlExpired
from workers.download import SizeMismatch, StreamCut, open_audio


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5, trust_env=False) as http:
        yield http


def read_all(
    http: httpx.Client, url: str, allowed: tuple[str, ...], max_bytes: int = 10**9
) -> tuple[int, str]:
    with open_audio(
        http, Download(url=url, format="mp3", content_type="audio/mpeg"), allowed, max_bytes
    ) as stream:
        for _chunk in stream.chunks():
            pass
        return stream.size, stream.sha256


def test_exact_bytes_and_hash(telnyx_emulator: TelnyxEmulator, client: httpx.Client) -> None:
    rec = telnyx_emulator.add_recording(size=1_000_003)
    url = telnyx_emulator.presign(rec.id, "mp3")
    assert read_all(client, url, (telnyx_emulator.audio_host,)) == (
        1_000_003,
        rec.audio("mp3").sha256(),
    )


def test_cut_stream_raises_never_returns_short(
    telnyx_emulator: TelnyxEmulator, client: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording(size=500_000)
    telnyx_emulator.inject("audio", "truncate", after_bytes=100_000)
    with pytest.raises(StreamCut):
        read_all(client, telnyx_emulator.presign(rec.id, "mp3"), (telnyx_emulator.audio_host,))


def test_expired_url_is_typed(telnyx_emulator: TelnyxEmulator, client: httpx.Client) -> None:
    rec = telnyx_emulator.add_recording(size=1000)
    telnyx_emulator.inject("audio", "expired")
    with pytest.raises(UrlExpired):
        read_all(client, telnyx_emulator.presign(rec.id, "mp3"), (telnyx_emulator.audio_host,))


def test_server_error_is_retryable(telnyx_emulator: TelnyxEmulator, client: httpx.Client) -> None:
    rec = telnyx_emulator.add_recording(size=1000)
    telnyx_emulator.inject("audio", "503")
    with pytest.raises(RetryLater):
        read_all(client, telnyx_emulator.presign(rec.id, "mp3"), (telnyx_emulator.audio_host,))


def test_size_limit(telnyx_emulator: TelnyxEmulator, client: httpx.Client) -> None:
    rec = telnyx_emulator.add_recording(size=50_000)
    with pytest.raises(PermanentFailure, match="exceeds"):
        read_all(
            client,
            telnyx_emulator.presign(rec.id, "mp3"),
            (telnyx_emulator.audio_host,),
            max_bytes=10_000,
        )


@pytest.fixture
def redirector() -> Iterator[LoopbackServer]:
    body = b"x" * 1000

    @Request.application
    def app(request: Request) -> Response:
        if request.path.startswith("/to/"):
            return Response(
                status=302, headers={"location": request.path[4:].replace("~", "://", 1)}
            )
        if request.path == "/loop":
            return Response(status=302, headers={"location": "/loop"})
        return Response(body, headers={"content-length": str(len(body))})

    with LoopbackServer(app) as server:
        yield server


def test_redirect_within_allowed_hosts_is_followed(
    redirector: LoopbackServer, client: httpx.Client
) -> None:
    allowed = (f"127.0.0.1:{redirector.port}",)
    size, sha = read_all(
        client, f"{redirector.url}/to/http~127.0.0.1:{redirector.port}/file", allowed
    )
    assert (size, sha) == (1000, hashlib.sha256(b"x" * 1000).hexdigest())


def test_redirect_to_another_host_is_refused(
    redirector: LoopbackServer, client: httpx.Client
) -> None:
    allowed = (f"127.0.0.1:{redirector.port}",)
    with pytest.raises(PermanentFailure, match="not in the allowed"):
        read_all(client, f"{redirector.url}/to/http~169.254.169.254/latest/meta-data", allowed)


def test_redirect_loops_are_bounded(redirector: LoopbackServer, client: httpx.Client) -> None:
    with pytest.raises(PermanentFailure, match="redirected"):
        read_all(client, f"{redirector.url}/loop", (f"127.0.0.1:{redirector.port}",))


def test_announced_size_differing_from_content_length_fails_before_the_body(
    telnyx_emulator: TelnyxEmulator, client: httpx.Client
) -> None:
    rec = telnyx_emulator.add_recording(size=5000)
    download = Download(
        url=telnyx_emulator.presign(rec.id, "mp3"),
        format="mp3",
        content_type="audio/mpeg",
        expected_size=4999,
    )
    with (
        pytest.raises(SizeMismatch, match="audio has 5000 bytes, the provider said 4999"),
        open_audio(client, download, (telnyx_emulator.audio_host,), 10**9),
    ):
        pytest.fail("the stream must not open")


@pytest.mark.parametrize(("announced", "raised"), [(1000, False), (1001, True)])
def test_announced_size_is_checked_after_the_last_byte_without_content_length(
    client: httpx.Client, announced: int, raised: bool
) -> None:
    @Request.application
    def app(request: Request) -> Response:
        return Response(iter([b"y" * 600, b"y" * 400]), direct_passthrough=True)  # no length

    with LoopbackServer(app) as server:
        download = Download(
            url=f"{server.url}/a.mp3",
            format="mp3",
            content_type="audio/mpeg",
            expected_size=announced,
        )
        with open_audio(client, download, (f"127.0.0.1:{server.port}",), 10**9) as stream:
            assert stream.expected_size is None
            chunks = stream.chunks()
            if raised:
                with pytest.raises(
                    SizeMismatch, match="audio has 1000 bytes, the provider said 1001"
                ):
                    list(chunks)
            else:
                assert sum(map(len, chunks)) == 1000
