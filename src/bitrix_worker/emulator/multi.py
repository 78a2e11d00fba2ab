"""Many emulated portals in one process and one event loop, each at its own loopback address.

A real deployment tells portals apart by host name, and so does the worker: a portal's limiter, gate and
pauses are keyed by the webhook's host (or the registry id). So each emulated portal gets its own address on
the loopback network (``127.0.0.2``, ``127.0.0.3``, ...; Linux routes all of ``127.0.0.0/8`` to ``lo``),
all on one port, served by one uvicorn server that picks the portal by the address a request arrived at.
Each portal is a whole ``create_app`` app: its own limits, faults, schema, store, webhook and OAuth tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import uvicorn
from starlette.types import Receive, Scope, Send

from .app import EmulatorApp, create_app
from .config import EmulatorConfig
from .server import START_TIMEOUT_S, ThreadedServer, _uvicorn_config

__all__ = ["MultiPortalServer"]


class _ByAddress:
    """ASGI: the portal app bound to the local address the connection came in on."""

    def __init__(self, apps: dict[str, EmulatorApp]) -> None:
        self.apps = apps

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server") or ("", 0)
        app = self.apps.get(str(server[0]))
        if app is None:  # pragma: no cover - only bound addresses reach the server
            raise RuntimeError(f"no emulated portal at {server[0]}")
        await app(scope, receive, send)


class MultiPortalServer(ThreadedServer):
    """``{"127.0.0.2": EmulatorConfig(...), ...}`` served on one port; a ``with`` / ``async with`` block."""

    def __init__(self, portals: dict[str, EmulatorConfig], port: int = 0) -> None:
        if not portals:
            raise ValueError("give at least one portal")
        self.configs = dict(portals)
        self.apps: dict[str, EmulatorApp] = {h: create_app(c) for h, c in portals.items()}  # type: ignore[misc]
        self._requested_port = port
        self._socks: list[socket.socket] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self.port = 0

    def base_url(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def webhook_url(self, host: str) -> str:
        cfg = self.configs[host]
        return f"{self.base_url(host)}/rest/{cfg.user_id}/{cfg.secret}/"

    def _bind(self) -> None:
        port = self._requested_port
        for host in self.configs:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                self._close_socks()
                raise
            port = int(sock.getsockname()[1])  # the first free port, then the same one for every address
            self._socks.append(sock)
        self.port = port

    def start(self) -> None:
        self._bind()
        self._server = uvicorn.Server(_uvicorn_config(_ByAddress(self.apps), "127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._run, name=f"bitrix-emulators-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (self._server.started and self._answers()):
            if self._error is not None or not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"emulators did not start: {self._error!r}")
            time.sleep(0.01)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((next(iter(self.configs)), self.port), timeout=1):
                return True
        except OSError:
            return False

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            if self._server is not None:
                await self._server.serve(sockets=self._socks)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by start()
            self._error = exc

    def _close_socks(self) -> None:
        for sock in self._socks:
            sock.close()
        self._socks = []

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is not None and not loop.is_closed():
            for app in self.apps.values():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(app.portal.release_hangs)
        if server is not None:
            server.should_exit = True
        if thread is not None:
            thread.join(timeout=15)
        self._close_socks()
        self._thread = self._loop = self._server = None
