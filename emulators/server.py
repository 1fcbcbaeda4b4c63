"""A WSGI app served on loopback from a daemon thread, for tests, benchmarks and demos.

Werkzeug's threaded dev server: one thread per connection, ``Connection: close`` on every
response (so a body shorter than its ``Content-Length`` reaches the client as a cut stream).
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["LoopbackServer", "Served"]

HOST = "127.0.0.1"


class _QuietHandler(WSGIRequestHandler):
    """Drops the per-request access log line; errors are still logged."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


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
    ) -> None:
        self.app = app
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
                request_handler=_QuietHandler if self._quiet else None,
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
