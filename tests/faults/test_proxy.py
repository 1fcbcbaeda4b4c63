"""The fault proxy itself, against a loopback echo server: each mode does what it says."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from emulators.sandbox import wait_until
from tests.faults.proxy import FaultProxy

pytestmark = pytest.mark.timeout(30)


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: _EchoServer = self.server  # type: ignore[assignment]
        try:
            while data := self.request.recv(65536):
                with server.lock:
                    server.received += data
                self.request.sendall(data)
        except ConnectionError:
            pass  # the proxy reset us: what some tests are about


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.received = b""


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def proxy(echo: _EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(*echo.server_address[:2]) as running:  # type: ignore[misc]
        yield running


def _connect(proxy: FaultProxy, timeout: float = 3) -> socket.socket:
    return socket.create_connection(proxy.address, timeout=timeout)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        data = sock.recv(n - len(out))
        if not data:
            break
        out += data
    return out


def _is_cut(sock: socket.socket) -> bool:
    """True when the peer reset or closed the connection (not a read timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pass_forwards_both_ways(proxy: FaultProxy, echo: _EchoServer) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"hello" * 1000)
        assert _recv_exactly(sock, 5000) == b"hello" * 1000
    assert echo.received == b"hello" * 1000


def test_refuse_stops_listening_and_pass_listens_again(proxy: FaultProxy) -> None:
    proxy.refuse()
    with pytest.raises(ConnectionRefusedError):
        _connect(proxy)
    proxy.pass_through()
    with _connect(proxy) as sock:
        sock.sendall(b"back")
        assert _recv_exactly(sock, 4) == b"back"


def test_cut_all_resets_open_connections(proxy: FaultProxy) -> None:
    with _connect(proxy) as first, _connect(proxy) as second:
        for sock in (first, second):
            sock.sendall(b"x")
            assert _recv_exactly(sock, 1) == b"x"
        assert proxy.cut_all() == 2
        assert _is_cut(first) and _is_cut(second)


def test_blackhole_accepts_reads_and_never_answers(proxy: FaultProxy, echo: _EchoServer) -> None:
    proxy.blackhole()
    with _connect(proxy, timeout=0.5) as sock:
        sock.sendall(b"into the void" * 100)
        with pytest.raises(TimeoutError):
            sock.recv(1)
        proxy.pass_through()  # a blackholed connection lost its bytes: it is cut
        sock.settimeout(3)
        assert _is_cut(sock)
    assert echo.received == b""


def test_blackhole_silences_open_connections(proxy: FaultProxy, echo: _EchoServer) -> None:
    with _connect(proxy, timeout=0.5) as sock:
        sock.sendall(b"a")
        assert _recv_exactly(sock, 1) == b"a"
        proxy.blackhole()
        sock.sendall(b"b")
        with pytest.raises(TimeoutError):
            sock.recv(1)
    assert echo.received == b"a"


@pytest.mark.parametrize("direction", ["upstream", "downstream"])
def test_reset_after_cuts_after_n_bytes_once(
    proxy: FaultProxy, echo: _EchoServer, direction: str
) -> None:
    proxy.reset_after(10, direction)  # type: ignore[arg-type]
    with _connect(proxy) as sock:
        sock.sendall(b"0123456789abcdefghij")
        got = b""
        try:
            while data := sock.recv(100):
                got += data
        except ConnectionResetError:
            pass
    if direction == "upstream":
        wait_until(lambda: echo.received == b"0123456789", 2, 0.02, "the echo server to read")
    else:
        assert got == b"0123456789"  # the echo had all 20, the client got 10 then a reset
    assert proxy.resets == 1 and proxy.mode == "pass"  # times=1: back to pass
    with _connect(proxy) as sock:
        sock.sendall(b"whole")
        assert _recv_exactly(sock, 5) == b"whole"


def test_latency_delays_each_chunk(proxy: FaultProxy) -> None:
    proxy.latency(0.3)
    with _connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(b"ping")
        assert _recv_exactly(sock, 4) == b"ping"
        assert time.monotonic() - started >= 0.6  # 0.3 s each way


def test_bandwidth_caps_throughput(proxy: FaultProxy) -> None:
    proxy.bandwidth(100_000)
    payload = b"z" * 40_000
    with _connect(proxy) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        assert _recv_exactly(sock, len(payload)) == payload
        assert time.monotonic() - started >= 0.35  # 40 kB at 100 kB/s, at least one way


def test_flip_byte_inverts_one_byte_upstream(proxy: FaultProxy, echo: _EchoServer) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"abc")
        assert _recv_exactly(sock, 3) == b"abc"
        proxy.flip_byte(5)
        payload = bytes(range(10)) * 3
        sock.sendall(payload)
        got = _recv_exactly(sock, len(payload))
    expected = bytearray(payload)
    expected[5] ^= 0xFF
    assert got == bytes(expected) and proxy.flips == 1 and proxy.mode == "pass"


def test_http_through_the_proxy() -> None:
    """An HTTP server behind the proxy: requests pass, then fail fast while refused."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        with FaultProxy("127.0.0.1", server.server_address[1]) as proxy:
            assert httpx.get(proxy.url("http", "/"), timeout=3).text == "ok"
            proxy.refuse()
            with pytest.raises(httpx.ConnectError):
                httpx.get(proxy.url("http", "/"), timeout=3)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
