"""What every provider emulator shares: a loopback lifecycle, a request log and injectable faults.

A subclass is a WSGI app that implements :meth:`Emulator.dispatch` (and :meth:`crash_response`
in the provider's error shape); ``start()``/``stop()`` (or ``with``) serve it from a thread.

Faults (:meth:`Emulator.inject`) fire on the next matching requests, before any auth or
signature check, and are consumed as they fire (FIFO per target): ``"api"`` (the provider's
REST API) or ``"audio"`` (the media URLs). Kinds: ``"429"`` (``retry_after=1``), ``"500"``,
``"503"``, ``"slow"`` (``seconds=1.0``, then answers normally), and for audio only ``"expired"``
(403 even for a fresh URL), ``"truncate"`` (full ``Content-Length``, connection closed after
``after_bytes``, default half the body; HEAD requests do not consume it), ``"expire_mid"`` (a
truncate that also expires the URL it was served on: that exact URL answers 403 ``Request has
expired`` from then on), ``"cut_chunked"`` (no ``Content-Length``: a chunked body whose
connection closes after ``after_bytes`` without the last chunk) and ``"trickle"`` (the body
spread over ``seconds``).
"""

from __future__ import annotations

import abc
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, Self

from werkzeug.wrappers import Request, Response

from emulators.server import LoopbackServer, Served

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["Emulator", "Fault", "FaultKind", "FaultTarget", "RequestRecord", "json_response"]

logger = logging.getLogger(__name__)

FaultTarget = Literal["api", "audio"]
FaultKind = Literal[
    "429", "500", "503", "expired", "truncate", "slow", "expire_mid", "cut_chunked", "trickle"
]

_FAULT_KINDS: dict[str, frozenset[str]] = {
    "api": frozenset({"429", "500", "503", "slow"}),
    "audio": frozenset(
        {"429", "500", "503", "slow", "expired", "truncate", "expire_mid", "cut_chunked", "trickle"}
    ),
}
_FAULT_OPTS: dict[str, frozenset[str]] = {
    "429": frozenset({"retry_after"}),
    "slow": frozenset({"seconds"}),
    "truncate": frozenset({"after_bytes"}),
    "expire_mid": frozenset({"after_bytes"}),
    "cut_chunked": frozenset({"after_bytes"}),
    "trickle": frozenset({"seconds"}),
}


#: Faults that act on a body: a HEAD request (which has none) does not consume them.
_BODY_FAULTS = frozenset({"truncate", "expire_mid", "cut_chunked", "trickle"})


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response."""
    text = json.dumps(body, separators=(",", ":"))
    return Response(text, status=status, headers=headers, content_type="application/json")


class RequestRecord(NamedTuple):
    """One request the emulator answered: arrival ``time.monotonic()``, method, path, status,
    and whether it carried the emulator's credentials (None: the emulator does not say)."""

    at: float
    method: str
    path: str
    status: int
    authorized: bool | None = None


@dataclass
class Fault:
    """A queued fault: ``kind``, how many more requests it hits, and its options."""

    kind: str
    remaining: int
    opts: dict[str, Any]


class Emulator(Served, abc.ABC):
    """Base of the provider emulators. All public methods are thread-safe; ``port=0`` is free.

    ``fault_kinds`` (target → kinds) and ``fault_options`` (kind → option names) say which
    faults :meth:`inject` takes; a provider whose media behaves differently overrides them.
    """

    fault_kinds: ClassVar[Mapping[str, frozenset[str]]] = _FAULT_KINDS
    fault_options: ClassVar[Mapping[str, frozenset[str]]] = _FAULT_OPTS

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = {target: [] for target in self.fault_kinds}
        self._requests: list[RequestRecord] = []
        self._server = LoopbackServer(self, port)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, keep_alive: bool = False) -> Self:
        """Start serving; returns self. ``keep_alive``: HTTP/1.1 keep-alive (``server.py``)."""
        self._server.keep_alive = keep_alive
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent, bounded)."""
        self._server.stop()

    @property
    def port(self) -> int:
        """The bound port (after ``start()``)."""
        return self._server.port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (the server root)."""
        return self._server.url

    @property
    def audio_host(self) -> str:
        """``127.0.0.1:PORT``: the host the audio URLs point at."""
        return f"127.0.0.1:{self._server.port}"

    # -- faults and observations --------------------------------------------------------------

    def inject(self, target: str, kind: str, times: int = 1, **opts: Any) -> None:
        """Queue a fault for the next ``times`` requests to ``target`` (see the module doc)."""
        if target not in self.fault_kinds:
            raise ValueError(f"unknown fault target {target!r}")
        if kind not in self.fault_kinds[target]:
            raise ValueError(f"fault {kind!r} does not apply to {target!r}")
        unknown = set(opts) - self.fault_options.get(kind, frozenset())
        if unknown:
            raise TypeError(f"unknown options for fault {kind!r}: {sorted(unknown)}")
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults[target].append(Fault(kind, times, dict(opts)))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            for queue in self._faults.values():
                queue.clear()

    def pending_faults(self) -> list[tuple[str, str, int]]:
        """``(target, kind, remaining)`` of every queued fault, in firing order."""
        with self._lock:
            return [(t, f.kind, f.remaining) for t, q in self._faults.items() for f in q]

    def take_fault(self, target: str, method: str) -> Fault | None:
        """The fault the next request to ``target`` meets (consuming one of its ``times``)."""
        with self._lock:
            queue = self._faults[target]
            if not queue or (method == "HEAD" and queue[0].kind in _BODY_FAULTS):
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.pop(0)
            return fault

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the requests answered so far (path without query string)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the requests logged so far."""
        with self._lock:
            self._requests.clear()

    # -- WSGI ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def dispatch(self, request: Request) -> Response:
        """Answer one request."""

    @abc.abstractmethod
    def crash_response(self) -> Response:
        """The provider's 500 body, for a bug in the emulator itself."""

    def is_authorized(self, request: Request) -> bool | None:
        """Whether ``request`` carries this emulator's credentials, for the request log."""
        return None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        arrived = time.monotonic()
        request = Request(environ)
        try:
            response = self.dispatch(request)
        except Exception:
            logger.exception(
                "%s failed on %s %s", type(self).__name__, request.method, request.path
            )
            response = self.crash_response()
        with self._lock:
            self._requests.append(
                RequestRecord(
                    arrived,
                    request.method,
                    request.path,
                    response.status_code,
                    self.is_authorized(request),
                )
            )
        return response(environ, start_response)
