"""A TCP proxy in front of the emulator that can make the portal's address refuse connections for a while.

Refused connections are a property of the network, not of an HTTP answer, so the emulator cannot fake them
while it listens: the proxy owns the address the worker is given. ``refuse()`` closes the listening socket
(new connections get ECONNREFUSED, exactly like a host whose web server is down) and ends the connections
already open the way a web server shutting down does: an idle keep-alive connection is closed at once, one
with a request in flight after its answer has been passed on (so no request is cut after the portal ran it,
which would be an ambiguous outcome of the proxy's making, not of the outage). ``accept()`` listens again on
the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Pipe:
    """One client connection and its upstream; ``busy`` while a request has been sent and not answered."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    busy: bool = False
    closing: bool = False

    def close(self) -> None:
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.close()


@dataclass
class RefusingProxy:
    target_port: int
    port: int = 0
    host: str = "127.0.0.1"
    connections: int = 0  # connections accepted while listening
    request_times: list[float] = field(default_factory=list)  # time.monotonic() of each request passed up
    _server: asyncio.Server | None = None
    _pipes: set[_Pipe] = field(default_factory=set)

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def accept(self) -> None:
        """Listen (again) on ``port``; the first call picks a free port."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def refuse(self) -> None:
        """Stop listening; close idle connections now and busy ones once their answer is through."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for pipe in list(self._pipes):
            pipe.closing = True
            if not pipe.busy:
                pipe.close()

    async def aclose(self) -> None:
        await self.refuse()
        for pipe in list(self._pipes):
            pipe.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        pipe = _Pipe(writer, up_writer)
        self._pipes.add(pipe)
        try:
            await asyncio.gather(
                self._pump(reader, pipe, upward=True), self._pump(up_reader, pipe, upward=False)
            )
        finally:
            self._pipes.discard(pipe)
            pipe.close()

    async def _pump(self, reader: asyncio.StreamReader, pipe: _Pipe, *, upward: bool) -> None:
        """Copy one direction; note the time of each request going up (a chunk that starts one: HTTP/1.1
        clients send a request's head in one write and wait for its answer before the next)."""
        out = pipe.upstream if upward else pipe.client
        try:
            while True:
                if pipe.closing and not upward:
                    # the answer of the last request is on its way: pass on what follows, then hang up
                    try:
                        data = await asyncio.wait_for(reader.read(65536), 0.2)
                    except TimeoutError:
                        break
                else:
                    data = await reader.read(65536)
                if not data:
                    break
                if upward and data[:5] in (b"POST ", b"GET /"):
                    self.request_times.append(time.monotonic())
                out.write(data)
                await out.drain()
                pipe.busy = upward  # a request makes the pipe busy; answer bytes coming back end that
        except (ConnectionError, OSError):
            pass
        finally:
            pipe.close()
