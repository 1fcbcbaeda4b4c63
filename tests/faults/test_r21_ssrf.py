"""R21 SSRF: audio only from each account's allowed hosts, never from internal addresses unless a
host is listed exactly; refused before any connection, as a permanent failure with its reason.

The guard's own cases use a resolver handed in (there is no DNS in CI); the redirect, rebinding
and capture cases go over real HTTP to loopback servers that count the connections they get.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from werkzeug.wrappers import Request, Response

from emulators.server import LoopbackServer
from emulators.telnyx import TelnyxEmulator
from ledger import State, accept_refs
from providers.base import Download, RecordingRef
from providers.errors import PermanentFailure, RetryLater
from tests.workers.test_capture import make_runtime
from workers.capture import capture
from workers.download import open_audio
from workers.url_guard import check_audio_url

DNS = {
    "bucket.s3.amazonaws.com": "52.216.1.1",
    "media.example.com": "93.184.216.34",
    "localhost.amazonaws.com": "127.0.0.1",
    "rebind.amazonaws.com": "10.1.2.3",
    "metadata.amazonaws.com": "169.254.169.254",
    "v6.amazonaws.com": "::1",
    "mapped.amazonaws.com": "::ffff:127.0.0.1",
}


def resolver(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
    """Stands in for DNS (there is none here): the answers the guard has to judge."""
    if host not in DNS:
        raise socket.gaierror(host)
    family = socket.AF_INET6 if ":" in DNS[host] else socket.AF_INET
    return [(family, socket.SOCK_STREAM, 6, "", (DNS[host], port))]


class Rebinder:
    """A resolver that answers ``first`` once, then ``then``: DNS rebinding."""

    def __init__(self, first: str, then: str) -> None:
        self.answers = [first, then]
        self.calls = 0

    def __call__(self, host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        address = self.answers[min(self.calls, 1)]
        self.calls += 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://bucket.s3.amazonaws.com/rec.mp3?X-Amz-Signature=x", ("*.amazonaws.com",)),
        ("http://127.0.0.1:8091/media/a.mp3", ("127.0.0.1:8091",)),
        ("http://127.0.0.1:8091/media/a.mp3", ("127.0.0.1",)),  # a bare host matches any port
        ("https://media.example.com/a.mp3", ("media.example.com",)),
    ],
)
def test_r21_allowed_hosts_pass(url: str, allowed: tuple[str, ...]) -> None:
    check_audio_url(url, allowed, resolver)


@pytest.mark.parametrize(
    ("url", "allowed", "reason"),
    [
        ("http://127.0.0.1:8092/a.mp3", ("127.0.0.1:8091",), "not in the allowed"),
        ("https://evil.com/a.mp3", ("*.amazonaws.com",), "not in the allowed"),
        ("https://amazonaws.com.evil.com/a", ("*.amazonaws.com",), "not in the allowed"),
        ("https://amazonaws.com/a", ("*.amazonaws.com",), "not in the allowed"),
        ("http://bucket.s3.amazonaws.com/a.mp3", ("*.amazonaws.com",), "not in the allowed"),
        ("ftp://127.0.0.1/a.mp3", ("127.0.0.1",), "scheme"),
        ("file:///etc/passwd", ("*.amazonaws.com",), "scheme"),
        ("https://user:pw@media.example.com/a", ("media.example.com",), "credentials"),
        ("https://user@media.example.com/a", ("media.example.com",), "credentials"),
        ("https://media.example.com@127.0.0.1/a", ("media.example.com",), "credentials"),
        ("https://localhost.amazonaws.com/a", ("*.amazonaws.com",), "internal address"),
        ("https://rebind.amazonaws.com/a", ("*.amazonaws.com",), "internal address"),
        ("https://metadata.amazonaws.com/a", ("*.amazonaws.com",), "internal address"),
        ("https://v6.amazonaws.com/a", ("*.amazonaws.com",), "internal address"),
        ("https://mapped.amazonaws.com/a", ("*.amazonaws.com",), "internal address"),
        ("not a url", ("*.example.com",), "scheme"),
        # Odd ports: a wildcard admits https on 443 only, a host:port entry its port only.
        ("https://bucket.s3.amazonaws.com:22/a", ("*.amazonaws.com",), "not in the allowed"),
        ("https://bucket.s3.amazonaws.com:6379/a", ("*.amazonaws.com",), "not in the allowed"),
        ("https://media.example.com:8443/a", ("media.example.com:443",), "not in the allowed"),
    ],
)
def test_r21_refused_with_a_reason(url: str, allowed: tuple[str, ...], reason: str) -> None:
    with pytest.raises(PermanentFailure, match=reason) as refused:
        check_audio_url(url, allowed, resolver)
    assert refused.value.code == "refused_host"


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "169.254.169.254", "[::1]", "0x7f.1", "2130706433", "0177.0.0.1", "10.0.0.1"],
)
def test_r21_internal_address_spellings_not_allowlisted_are_refused(host: str) -> None:
    with pytest.raises(PermanentFailure, match=r"not in the allowed|not a valid URL"):
        check_audio_url(f"https://{host}/a.mp3", ("*.amazonaws.com", "media.example.com"), resolver)


def test_r21_unresolvable_host_is_retried_later() -> None:
    with pytest.raises(RetryLater):
        check_audio_url("https://nx.amazonaws.com/a", ("*.amazonaws.com",), resolver)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0x7f.1",
        "169.254.169.254",
        "10.0.0.1",
        "[::1]",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - a URL host under test, not a bind address
    ],
)
def test_r21_internal_addresses_refused_behind_a_wildcard(host: str) -> None:
    """A wildcard never admits an internal address, whatever spelling the URL uses (the real
    resolver reads ``0x7f.1`` and ``2130706433`` as 127.0.0.1)."""
    with pytest.raises(PermanentFailure):
        check_audio_url(f"https://{host}/a.mp3", ("*.amazonaws.com", "*.0.0.1", "*.1"))


def test_r21_rebinding_resolver_is_asked_once_and_its_vetted_answer_is_pinned() -> None:
    """Public to the check, private to the connect: the second answer is never asked for."""
    rebinder = Rebinder("52.216.1.1", "169.254.169.254")
    vetted = check_audio_url(
        "https://bucket.s3.amazonaws.com/a.mp3", ("*.amazonaws.com",), rebinder
    )
    with httpx.Client() as http:
        request = vetted.request(http, {})
    assert rebinder.calls == 1
    assert request.url.host == "52.216.1.1"
    assert request.headers["host"] == "bucket.s3.amazonaws.com"
    assert request.extensions["sni_hostname"] == "bucket.s3.amazonaws.com"  # TLS checks the name


class CountingListener:
    """A TCP listener on ``host`` that counts the connections it accepts."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.sock.settimeout(0.2)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def private_listener() -> Iterator[CountingListener]:
    listener = CountingListener("127.0.0.2")  # a loopback address no allow-list names
    try:
        yield listener
    finally:
        listener.close()


AUDIO = b"a" * 1000


@pytest.fixture
def audio_server() -> Iterator[LoopbackServer]:
    """Serves ``AUDIO``, or a 302 to whatever ``/to/<scheme>~<rest>`` names; counts requests."""
    hits: list[str] = []

    @Request.application
    def app(request: Request) -> Response:
        hits.append(request.host)
        if request.path.startswith("/to/"):
            return Response(
                status=302, headers={"location": request.path[4:].replace("~", "://", 1)}
            )
        return Response(AUDIO, headers={"content-length": str(len(AUDIO))})

    with LoopbackServer(app) as server:
        server.hits = hits  # type: ignore[attr-defined]
        yield server


def fetch(url: str, allowed: tuple[str, ...], **kwargs: Any) -> tuple[int, str, str]:
    download = Download(url=url, format="mp3", content_type="audio/mpeg")
    with (
        httpx.Client(timeout=5, trust_env=False) as http,
        open_audio(http, download, allowed, 10**6, **kwargs) as stream,
    ):
        for _chunk in stream.chunks():
            pass
        return stream.size, stream.sha256, stream.host


@pytest.mark.parametrize("target", ["http~169.254.169.254/latest/meta-data", "http~[::1]/x",
                                    "https~10.0.0.1/x", "PRIVATE"])  # fmt: skip
def test_r21_302_to_a_private_address_is_refused_before_connecting(
    audio_server: LoopbackServer, private_listener: CountingListener, target: str
) -> None:
    if target == "PRIVATE":
        target = f"http~{private_listener.host}:{private_listener.port}/x"
    allowed = (f"127.0.0.1:{audio_server.port}",)
    with pytest.raises(PermanentFailure, match="not in the allowed") as refused:
        fetch(f"{audio_server.url}/to/{target}", allowed)
    assert refused.value.code == "refused_host"
    assert private_listener.accepted == 0
    assert len(audio_server.hits) == 1  # type: ignore[attr-defined]  # the redirect, once


def test_r21_connection_goes_to_the_vetted_address_not_a_second_lookup(
    audio_server: LoopbackServer, private_listener: CountingListener
) -> None:
    """``media.rebind.test`` is in no DNS: the download only succeeds by connecting to the
    address the guard vetted (127.0.0.1, where the audio is), never to the resolver's second
    answer (127.0.0.2, where a listener counts connections)."""
    rebinder = Rebinder("127.0.0.1", "127.0.0.2")
    url = f"http://media.rebind.test:{audio_server.port}/rec.mp3"
    allowed = (f"media.rebind.test:{audio_server.port}",)
    size, sha256, host = fetch(url, allowed, resolve=rebinder)
    assert (size, sha256) == (len(AUDIO), hashlib.sha256(AUDIO).hexdigest())
    assert host == "media.rebind.test"
    assert rebinder.calls == 1 and private_listener.accepted == 0
    assert audio_server.hits == [f"media.rebind.test:{audio_server.port}"]  # type: ignore[attr-defined]


def test_r21_capture_of_a_disallowed_host_fails_once_with_a_reason(
    tmp_path: Path, telnyx_emulator: TelnyxEmulator
) -> None:
    """The provider's URL points at a host no allow-list names: the row ends ``failed`` with
    the reason after one attempt, nothing was requested from the audio host, no retry queued."""
    republished: list[tuple[int, float | None]] = []
    runtime = make_runtime(
        tmp_path, telnyx_emulator, republished, CALLREC_TELNYX_AUDIO_HOSTS="*.amazonaws.com"
    )
    try:
        rec = telnyx_emulator.add_recording(size=100)
        ref = RecordingRef(recording_id=rec.id)
        (row_id,) = accept_refs(runtime.sessions, "telnyx", "default", [ref], source="test").new_ids
        outcome = capture(runtime, row_id)
        audio_requests = [r for r in telnyx_emulator.requests if "/media/" in r.path]
    finally:
        runtime.close()
    assert outcome.state == State.FAILED
    assert outcome.detail is not None and "not in the allowed audio hosts" in outcome.detail
    assert republished == [] and audio_requests == []
