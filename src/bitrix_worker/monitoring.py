"""The worker's monitoring endpoints: ``/metrics``, ``/healthz`` and ``/readyz``, served by uvicorn in the
worker's own event loop (so a stuck loop also stops answering ``/healthz``: that is the liveness signal).

* ``/healthz`` 200 while the worker loop runs; 503 once it has ended, or while it is stuck: it holds entries
  and has made no progress for longer than ``stall_after_s`` (``stall.py``) while the portal is not paused.
* ``/readyz`` 200 only when Redis and the mapping store answer, the portal's breaker is closed and the worker
  is not stuck; else 503 with ``{"ready": false, "reason": ...}``. An open breaker means "do not send more
  work here", not "restart"; a stuck worker means "restart it" (its entries are then reclaimed).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import Settings
from .errors import BitrixWorkerError
from .gate import PortalGate
from .mapping import MappingStore
from .metrics import CONTENT_TYPE, PrometheusEvents
from .redis.gauges import QueueReader

PROBE_TIMEOUT_S = 2.0


@dataclass(slots=True)
class Probes:
    """What the endpoints look at; the worker's own connections, so readiness tests the real path."""

    settings: Settings
    reader: QueueReader
    store: MappingStore
    gate: PortalGate
    alive: Callable[[], bool]
    metrics: PrometheusEvents | None = None
    stuck: Callable[[], str | None] = lambda: None


async def _stuck_reason(p: Probes) -> str | None:
    """Why the worker is stuck, unless the portal is paused (then holding entries without progress is the
    plan: the gate holds them until a probe succeeds)."""
    reason = p.stuck()
    if reason is None:
        return None
    try:
        state = await asyncio.wait_for(p.gate.state(), PROBE_TIMEOUT_S)
    except (BitrixWorkerError, TimeoutError):
        return reason
    return None if state.open else reason


async def _not_ready_reason(p: Probes) -> str | None:
    try:
        await asyncio.wait_for(p.reader.ping(), PROBE_TIMEOUT_S)
    except (BitrixWorkerError, TimeoutError) as exc:
        return f"redis: {type(exc).__name__}: {exc}"
    try:
        store_ok = await asyncio.wait_for(p.store.ping(), PROBE_TIMEOUT_S)
    except TimeoutError:
        store_ok = False
    if not store_ok:
        return "mapping store: not answering"
    try:
        state = await p.gate.state()
    except BitrixWorkerError as exc:
        return f"breaker: {exc}"
    if state.open:
        return f"breaker open: {state.reason}"
    return p.stuck()


def create_app(probes: Probes, extra: Sequence[Route] = ()) -> Starlette:
    """The endpoints; ``extra`` adds routes such as the install callback (``portals/install.py``)."""

    async def metrics(_: Request) -> Response:
        if probes.metrics is None:
            return Response("metrics disabled\n", status_code=404, media_type="text/plain")
        await probes.metrics.refresh(probes.reader, probes.gate)
        return Response(probes.metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(_: Request) -> Response:
        if not probes.alive():
            return JSONResponse({"alive": False, "reason": "worker loop has stopped"}, status_code=503)
        stuck = await _stuck_reason(probes)
        if stuck is not None:
            return JSONResponse({"alive": False, "reason": stuck}, status_code=503)
        return JSONResponse({"alive": True})

    async def readyz(_: Request) -> Response:
        reason = await _not_ready_reason(probes)
        if reason is None:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": reason}, status_code=503)

    return Starlette(
        routes=[
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *extra,
        ]
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The worker owns SIGTERM/SIGINT (graceful drain); uvicorn must neither take nor re-raise them.
        yield


class HttpServer:
    """uvicorn as a task in the current loop; binds first so ``port=0`` gets a known free port."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self._app = app
        self.host = host
        self._requested_port = port
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        """Listen; OSError (port taken, bad host) propagates for the caller to report."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_config=None,  # keep the worker's redacting log setup; uvicorn's dictConfig would replace it
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="none",
            http="h11",
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it
                break
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close()
        self._server = self._task = self._sock = None
