"""A WSGI app served on loopback from a daemon thread, for tests, benchmarks and demos.

Werkzeug's threaded dev server: one thread per connection, ``Connection: close`` on every
response (so a body shorter than its ``Content-Length`` reaches the client as a cut stream).
``keep_alive=True`` keeps HTTP/1.1 connections open instead, as real providers and S3 do (the
benchmarks use it: a new TCP connection per request was an emulator cost, not callrec's).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["KeepAliveHandler", "LoopbackServer", "Served", "handler_class"]

HOST = "127.0.0.1"


class _QuietHandler(WSGIRequestHandler):
    """Drops the per-request access log line; errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


class _CountingWriter:
    """``wfile`` wrapper that counts the body bytes written after the headers."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.counting = False
        self.body = 0

    def write(self, data: bytes) -> int:
        if self.counting:
            self.body += len(data)
        return self.raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class KeepAliveHandler(WSGIRequestHandler):
    """HTTP/1.1 keep-alive on werkzeug's dev server, which closes after every response.

    werkzeug closes because after each response it drains whatever the socket still holds,
    which on an open connection would swallow the next request. Here the app and that drain
    read the request body through a stream bounded by its ``Content-Length``, so the next
    request stays in the socket. The connection still closes when the client asks, for a
    chunked request body, and for a response whose body is not exactly its
    ``Content-Length`` (a fault that cuts a body short reaches the client as a cut stream,
    as without keep-alive).
    """

    # Headers and body go out in separate writes: with Nagle on, the body of a response on a
    # reused connection waits for the client's delayed ACK (~40 ms). Real servers disable it.
    disable_nagle_algorithm = True
    _keep: bool = False
    _declared: int | None = None
    _status: int = 0

    def run_wsgi(self) -> None:
        length = self.headers.get("Content-Length", "0").strip()
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        self._keep = not self.close_connection and not chunked and length.isdigit()
        self._declared = None
        self._status = 0
        if not self._keep:
            super().run_wsgi()
            return
        rfile, wfile = self.rfile, self.wfile
        body = LimitedStream(rfile, int(length))  # type: ignore[arg-type]
        writer = _CountingWriter(wfile)  # type: ignore[arg-type]
        self.rfile, self.wfile = body, writer  # type: ignore[assignment]
        try:
            super().run_wsgi()
            body.exhaust()  # what the app left unread, never past this request
        finally:
            self.rfile, self.wfile = rfile, wfile
        expected = 0 if self.command == "HEAD" or self._status in (204, 304) else self._declared
        if expected is None or writer.body != expected:
            self.close_connection = True

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def send_header(self, keyword: str, value: str) -> None:
        name = keyword.lower()
        if name == "content-length" and value.strip().isdigit():
            self._declared = int(value)
        if name == "connection" and self._keep and self._declared is not None:
            return  # werkzeug's unconditional "Connection: close"
        super().send_header(keyword, value)

    def end_headers(self) -> None:
        super().end_headers()
        if isinstance(self.wfile, _CountingWriter):
            self.wfile.counting = True
            self.wfile.body = 0


class _QuietKeepAliveHandler(KeepAliveHandler, _QuietHandler):
    pass


def handler_class(*, quiet: bool, keep_alive: bool) -> type[WSGIRequestHandler] | None:
    """The request handler for these options (None: werkzeug's default)."""
    if keep_alive:
        return _QuietKeepAliveHandler if quiet else KeepAliveHandler
    return _QuietHandler if quiet else None


class Served:
    """``with`` support for anything with ``start()`` (returning itself) and ``stop()``."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LoopbackServer(Served):
    """Serve ``app`` on ``127.0.0.1:port`` (``port=0``: a free port) until :meth:`stop`.

    ``start()`` returns once the socket is listening; ``.port``/``.url`` are valid from then on.
    ``stop()`` is idempotent and bounded by ``stop_timeout`` seconds; in-flight request threads
    are daemons and are not waited for.
    """

    def __init__(
        self,
        app: WSGIApplication,
        port: int = 0,
        *,
        quiet: bool = True,
        stop_timeout: float = 5.0,
        keep_alive: bool = False,
    ) -> None:
        self.app = app
        self.keep_alive = keep_alive
        self._requested_port = port
        self._quiet = quiet
        self._stop_timeout = stop_timeout
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port; only after :meth:`start`."""
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, no trailing slash."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> Self:
        """Bind and serve in a daemon thread; raises ``OSError`` if the port is taken."""
        if self._server is not None:
            raise RuntimeError("server already started")
        try:
            server = make_server(
                HOST,
                self._requested_port,
                self.app,
                threaded=True,
                request_handler=handler_class(quiet=self._quiet, keep_alive=self.keep_alive),
            )
        except SystemExit as exc:  # werkzeug prints the bind error and calls sys.exit(1)
            raise OSError(f"cannot bind {HOST}:{self._requested_port}") from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"loopback-server-{server.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (bounded wait)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        # shutdown() blocks until serve_forever() exits; run it in a helper so a stuck loop
        # cannot hang the caller past stop_timeout.
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(self._stop_timeout)
        thread.join(self._stop_timeout)
        server.server_close()
        self._server = None
        self._thread = None
