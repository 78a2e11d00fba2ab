"""Run the emulator: in a background thread with its own event loop (tests, benchmarks) or blocking (CLI).

The thread variant binds the socket itself first, so ``port=0`` gets a free port known before start, and
it returns only once the socket accepts connections. Stopping releases requests held by timeout faults
first, so shutdown never waits ``hang_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from types import TracebackType
from typing import Any, Self

import uvicorn

from .app import EmulatorApp, create_app
from .config import EmulatorConfig

START_TIMEOUT_S = 10.0


def _uvicorn_config(app: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        log_config=None,  # keep the host process's logging (our redacting handlers) untouched
        access_log=False,
        lifespan="off",
        loop="asyncio",
        http="h11",
        ws="none",
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )


class ThreadedServer:
    """``with`` / ``async with`` for a server that runs in its own thread (``start``/``stop`` block; the async
    forms run them in a worker thread so the caller's event loop keeps serving)."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)


class EmulatorServer(ThreadedServer):
    """An emulated portal on ``host:port`` (``port=0``: any free port); a ``with`` / ``async with`` block."""

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or EmulatorConfig()
        self.host = host
        self._requested_port = port
        self.app: EmulatorApp = create_app(self.config)  # type: ignore[assignment]
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("emulator is not running")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/{self.config.user_id}/{self.config.secret}/"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets only then, and without it
        # uvicorn's separate header/body writes meet delayed ACKs (~40 ms per request on loopback).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self._sock = sock
        self._port = int(sock.getsockname()[1])
        self._server = uvicorn.Server(_uvicorn_config(self.app, self.host, self.port))
        self._thread = threading.Thread(target=self._run, name=f"bitrix-emulator-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self._error is not None or not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulator did not start: {self._error!r}")
            time.sleep(0.01)

    def _answers(self) -> bool:
        if self._server is None or not self._server.started:
            return False
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            if self._server is not None and self._sock is not None:
                await self._server.serve(sockets=[self._sock])

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start(), not lost in the thread
            self._error = exc

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between: nothing to release
                loop.call_soon_threadsafe(self.app.portal.release_hangs)
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=15)
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._port = None
        self._thread = None
        self._loop = None


def serve(config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 9424) -> None:
    """Blocking run for ``bitrix-worker emulator --port N``; Ctrl+C stops it. Prints nothing: the CLI
    announces the (redacted) webhook URL itself."""
    uvicorn.Server(_uvicorn_config(create_app(config), host, port)).run()
