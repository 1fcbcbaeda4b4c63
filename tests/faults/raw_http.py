"""A bare HTTP/1.1 POST over a socket, for what no HTTP client library will send: a body that
keeps streaming after the server has answered, raw chunked framing, header lines too long."""

from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass

__all__ = ["RawResponse", "post_raw"]

HOST = "127.0.0.1"


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    #: Bytes of the request body (with chunk framing) the kernel took before the client stopped:
    #: on loopback its buffers take a few hundred KiB the server never reads.
    sent: int


def _parse(data: bytes, sent: int) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(status, headers, body, sent)


def post_raw(
    port: int,
    path: str,
    headers: list[tuple[str, str]],
    body_size: int,
    *,
    chunked: bool = False,
    piece: int = 64 * 1024,
    timeout: float = 30.0,
) -> RawResponse:
    """POST ``body_size`` bytes of ``x`` (``Content-Length`` or chunked), stopping as soon as the
    server answers or closes; returns its answer. Bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        framing = (
            ("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(body_size))
        )
        lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in [*headers, framing]]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        sock.setblocking(False)
        queued, sent, pending = 0, 0, b""
        while (queued < body_size or pending) and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.5)
            if readable:  # an answer (or a close) before the whole body: stop sending
                break
            if not writable:
                continue
            if not pending:
                size = min(piece, body_size - queued)
                block = b"x" * size
                pending = f"{size:x}\r\n".encode() + block + b"\r\n" if chunked else block
                queued += size
            try:
                taken = sock.send(pending)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # EPIPE/ECONNRESET: the server closed; read what it said
                break
            pending, sent = pending[taken:], sent + taken
        else:
            if chunked and queued >= body_size:
                sock.setblocking(True)
                sock.sendall(b"0\r\n\r\n")
        sock.setblocking(True)
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        data = b""
        try:
            while not _complete(data) and (chunk := sock.recv(65536)):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return _parse(data, sent)


def _complete(data: bytes) -> bool:
    """Whether ``data`` holds a whole response with a ``Content-Length`` (the server may keep
    reading the rest of our body before it closes, so the close is not waited for)."""
    _, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = _parse(data, 0).headers.get("content-length")
    return length is not None and len(body) >= int(length)
