"""A small TCP fault proxy on loopback, in front of one upstream ``(host, port)``.

Toxiproxy does not fit here (no Debian package; its PyPI client needs the Go server), so the
fault suite has its own: an asyncio server running in a thread, started and stopped by the test
(``with FaultProxy(host, port) as proxy:``), whose mode can be switched at run time:

- ``pass_through()``: forward both ways (the start mode);
- ``refuse()``: stop listening, so new connections get ``ECONNREFUSED``; open ones are left
  alone (``cut_all()`` ends them);
- ``blackhole()``: accept and read, never forward and never answer; open connections are
  silenced too, and are cut when the mode changes (their bytes are gone);
- ``reset_after(n, direction)``: forward ``n`` more bytes in that direction (counted across
  connections from the switch), then reset the connection that carried byte ``n`` (TCP RST);
  ``times`` such resets, then back to pass;
- ``latency(seconds)``: delay every chunk by ``seconds``, both ways;
- ``bandwidth(bytes_per_second)``: cap each connection's throughput, both ways;
- ``flip_byte(offset)``: invert one byte of the client→server stream, ``offset`` bytes after
  the switch (across connections), then back to pass;
- ``cut_all()``: reset every open connection now, whatever the mode.

Every wait is bounded: control calls time out after a few seconds and ``stop()`` joins the
loop's thread with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = ["Direction", "FaultProxy"]

T = TypeVar("T")
Direction = Literal["upstream", "downstream"]

_CHUNK = 64 * 1024
_CONTROL_TIMEOUT = 5.0
_CONNECT_TIMEOUT = 5.0


@dataclass(frozen=True)
class _Mode:
    name: str = "pass"
    bytes_limit: int = 0  # reset_after: bytes to forward; flip_byte: the offset
    direction: Direction = "upstream"
    times: int = 1
    seconds: float = 0.0
    rate: float = 0.0


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    silenced: bool = False

    def reset(self) -> None:
        """Abort both sides with an RST (SO_LINGER 0), not a polite FIN."""
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


class _Cut(Exception):
    """Raised inside a pump to reset its connection."""


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream``; switch faults with the mode methods."""

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = "127.0.0.1"
        self.port = port
        self._mode = _Mode()
        self._counted = 0  # bytes seen in the mode's direction since the switch
        self._conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        #: What happened, for assertions: connections accepted, resets sent, bytes flipped.
        self.accepted = 0
        self.resets = 0
        self.flips = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def mode(self) -> str:
        return self._mode.name

    # -- modes -------------------------------------------------------------------------------
    def pass_through(self) -> None:
        self._switch(_Mode())

    def refuse(self) -> None:
        self._switch(_Mode("refuse"))

    def blackhole(self) -> None:
        self._switch(_Mode("blackhole"))

    def reset_after(self, n_bytes: int, direction: Direction = "upstream", times: int = 1) -> None:
        self._switch(_Mode("reset_after", bytes_limit=n_bytes, direction=direction, times=times))

    def latency(self, seconds: float) -> None:
        self._switch(_Mode("latency", seconds=seconds))

    def bandwidth(self, bytes_per_second: float) -> None:
        self._switch(_Mode("bandwidth", rate=bytes_per_second))

    def flip_byte(self, offset: int) -> None:
        self._switch(_Mode("flip_byte", bytes_limit=offset))

    def cut_all(self) -> int:
        """Reset every open connection; return how many there were."""
        return self._call(self._cut_all())

    # -- inside the loop ---------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = _CONTROL_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _switch(self, mode: _Mode) -> None:
        self._call(self._set_mode(mode))

    async def _set_mode(self, mode: _Mode) -> None:
        self._mode = mode
        self._counted = 0
        if mode.name == "refuse":
            await self._close_listener()
        elif self._server is None:
            await self._listen()
        if mode.name != "blackhole":
            for conn in [c for c in self._conns if c.silenced]:
                conn.reset()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _cut_all(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            conn.reset()
        self.resets += len(conns)
        return len(conns)

    async def _shutdown(self) -> None:
        await self._close_listener()
        await self._cut_all()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(client=writer)
        self._conns.add(conn)
        try:
            if self._mode.name == "refuse":  # accepted while the listener was closing
                conn.reset()
                return
            if self._mode.name == "blackhole":
                conn.silenced = True
                await self._drain_forever(reader)
                return
            try:
                up_reader, conn.upstream = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), _CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError):
                conn.reset()
                return
            conn.tasks = [
                asyncio.create_task(self._pump(conn, reader, conn.upstream, "upstream")),
                asyncio.create_task(self._pump(conn, up_reader, writer, "downstream")),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._conns.discard(conn)
            for side in (writer, conn.upstream):
                if side is not None:
                    side.close()

    async def _drain_forever(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(_CHUNK):
            pass

    async def _pump(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: Direction,
    ) -> None:
        try:
            while True:
                data = await reader.read(self._chunk_size())
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                out = await self._apply(conn, direction, data)
                if out:
                    writer.write(out)
                    await writer.drain()
        except _Cut as cut:
            if cut.args and cut.args[0]:
                writer.write(cut.args[0])
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), 1)
                # Let the peer read them first: a receiver that gets the RST before reading
                # loses its unread bytes (Linux), and the cut would fall short of ``n``.
                await asyncio.sleep(0.1)
            self.resets += 1
            conn.reset()
        except (ConnectionError, OSError, asyncio.CancelledError):
            conn.reset()

    def _chunk_size(self) -> int:
        if self._mode.name == "bandwidth":
            return max(1, min(_CHUNK, int(self._mode.rate / 20)))
        return _CHUNK

    async def _apply(self, conn: _Conn, direction: Direction, data: bytes) -> bytes | None:
        """What of ``data`` to forward under the current mode (None: nothing)."""
        mode = self._mode
        if mode.name == "blackhole":
            conn.silenced = True
            return None
        if mode.name == "latency":
            await asyncio.sleep(mode.seconds)
        elif mode.name == "bandwidth":
            await asyncio.sleep(len(data) / mode.rate)
        elif mode.name == "reset_after" and direction == mode.direction:
            left = mode.bytes_limit - self._counted
            self._counted += len(data)
            if len(data) > left:
                times = mode.times - 1
                self._mode = _Mode() if times <= 0 else dataclasses.replace(mode, times=times)
                self._counted = 0
                raise _Cut(data[: max(0, left)])
        elif mode.name == "flip_byte" and direction == "upstream":
            at = mode.bytes_limit - self._counted
            self._counted += len(data)
            if 0 <= at < len(data):
                flipped = bytearray(data)
                flipped[at] ^= 0xFF
                self.flips += 1
                self._mode = _Mode()
                return bytes(flipped)
        return data
