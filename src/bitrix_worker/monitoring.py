"""The worker's monitoring endpoints: ``/metrics``, ``/healthz`` and ``/readyz``, served by uvicorn in the
worker's own event loop (so a stuck loop also stops answering ``/healthz``: that is the liveness signal).

* ``/healthz`` 200 while the worker loop runs; 503 once it has ended, or while it is stuck: it holds entries
  and has made no progress for longer than ``stall_after_s`` (``stall.py``) while the portal is not paused.
* ``/readyz`` 200 only when Redis and the mapping store answer, the portal's breaker is closed and the worker
  is not stuck; else 503 with ``{"ready": false, "reason": ...}``. An open breaker means "do not send more
  work here", not "restart"; a stuck worker means "restart it" (its entries are then reclaimed).

A multi-portal process (``FleetProbes``) answers for all its portal loops at once:

* ``/healthz`` 200 ``{"alive": true, "portals": N}`` while the fleet runs and no loop is stuck (a loop of a
  paused portal holding entries is not); 503 with the stuck portals' ids and reasons, or once it has ended.
* ``/readyz`` 200 when Redis, the mapping store and the portal registry answer, with the portals whose gate is
  shut listed (``breaker_open``: id -> reason): one portal's outage or ``auth_broken`` is not the process's,
  the others are still served. 503 ``{"ready": false, "reason": ...}`` otherwise.
* ``/metrics`` labels the per-portal series with ``portal`` (``metrics.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .config import Settings
from .errors import BitrixWorkerError
from .gate import PortalGate
from .mapping import MappingStore
from .metrics import CONTENT_TYPE, GAUGE_READS_AT_ONCE, PrometheusEvents
from .portals.registry import PortalRegistry
from .redis.gauges import QueueReader

if TYPE_CHECKING:
    from .worker import Worker

PROBE_TIMEOUT_S = 2.0
Answer = tuple[int, dict[str, Any]]


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


@dataclass(slots=True)
class FleetProbes:
    """What a multi-portal process's endpoints look at: its shared connections and its portal loops."""

    settings: Settings
    reader: QueueReader  # on the fleet's Redis pool (only its ping is used)
    store: MappingStore
    registry: PortalRegistry
    loops: Callable[[], Mapping[str, Worker]]  # the portals this process serves now: id -> its loop
    alive: Callable[[], bool]
    metrics: PrometheusEvents | None = None


async def _unless_paused(reason: str | None, gate: PortalGate) -> str | None:
    """``reason`` (the worker is stuck) unless the portal is paused (then holding entries without progress
    is the plan: the gate holds them until a probe succeeds)."""
    if reason is None:
        return None
    try:
        state = await asyncio.wait_for(gate.state(), PROBE_TIMEOUT_S)
    except (BitrixWorkerError, TimeoutError):
        return reason
    return None if state.open else reason


async def _shared_not_ready(reader: QueueReader, store: MappingStore) -> str | None:
    """Why Redis or the mapping store does not answer, or None."""
    try:
        await asyncio.wait_for(reader.ping(), PROBE_TIMEOUT_S)
    except (BitrixWorkerError, TimeoutError) as exc:
        return f"redis: {type(exc).__name__}: {exc}"
    try:
        store_ok = await asyncio.wait_for(store.ping(), PROBE_TIMEOUT_S)
    except TimeoutError:
        store_ok = False
    return None if store_ok else "mapping store: not answering"


async def _not_ready_reason(p: Probes) -> str | None:
    reason = await _shared_not_ready(p.reader, p.store)
    if reason is not None:
        return reason
    try:
        state = await p.gate.state()
    except BitrixWorkerError as exc:
        return f"breaker: {exc}"
    if state.open:
        return f"breaker open: {state.reason}"
    return p.stuck()


async def _health(p: Probes) -> Answer:
    if not p.alive():
        return 503, {"alive": False, "reason": "worker loop has stopped"}
    stuck = await _unless_paused(p.stuck(), p.gate)
    if stuck is not None:
        return 503, {"alive": False, "reason": stuck}
    return 200, {"alive": True}


async def _readiness(p: Probes) -> Answer:
    reason = await _not_ready_reason(p)
    if reason is None:
        return 200, {"ready": True}
    return 503, {"ready": False, "reason": reason}


async def _fleet_health(p: FleetProbes) -> Answer:
    if not p.alive():
        return 503, {"alive": False, "reason": "the portal fleet has stopped"}
    loops = dict(p.loops())
    suspects = {pid: (r, w.portal.gate) for pid, w in loops.items() if (r := w.stuck()) is not None}
    reasons = await asyncio.gather(*(_unless_paused(r, gate) for r, gate in suspects.values()))
    stuck = {pid: r for pid, r in zip(suspects, reasons, strict=True) if r is not None}
    if stuck:
        first = min(stuck)
        return 503, {"alive": False, "reason": f"portal {first}: {stuck[first]}", "stuck": stuck}
    return 200, {"alive": True, "portals": len(loops)}


async def _fleet_readiness(p: FleetProbes) -> Answer:
    reason = await _shared_not_ready(p.reader, p.store)
    if reason is None:
        try:
            registry_ok = await asyncio.wait_for(p.registry.ping(), PROBE_TIMEOUT_S)
        except TimeoutError:
            registry_ok = False
        reason = None if registry_ok else "portal registry: not answering"
    if reason is None and not p.alive():
        reason = "the portal fleet has stopped"
    if reason is not None:
        return 503, {"ready": False, "reason": reason}
    loops = dict(p.loops())
    return 200, {"ready": True, "portals": len(loops), "breaker_open": await _shut_gates(loops)}


async def _shut_gates(loops: Mapping[str, Worker]) -> dict[str, str]:
    """The served portals whose gate is shut, with the reason (a few at a time)."""
    at_once = asyncio.Semaphore(GAUGE_READS_AT_ONCE)

    async def reason(worker: Worker) -> str | None:
        async with at_once:
            try:
                state = await asyncio.wait_for(worker.portal.gate.state(), PROBE_TIMEOUT_S)
            except (BitrixWorkerError, TimeoutError) as exc:
                return f"unknown: {type(exc).__name__}"
        return (state.reason or "open") if state.open else None

    found = await asyncio.gather(*(reason(w) for w in loops.values()))
    return {pid: r for pid, r in sorted(zip(loops, found, strict=True)) if r is not None}


async def _refresh(probes: Probes | FleetProbes, metrics: PrometheusEvents) -> None:
    if isinstance(probes, Probes):
        await metrics.refresh(probes.reader, probes.gate)
    else:
        loops = probes.loops()
        await metrics.refresh_portals({pid: (w.reader, w.portal.gate) for pid, w in loops.items()})


def create_app(probes: Probes | FleetProbes, extra: Sequence[Route] = ()) -> Starlette:
    """The endpoints of one worker (``Probes``) or of a multi-portal process (``FleetProbes``); ``extra``
    adds routes such as the install callback (``portals/install.py``)."""

    async def metrics(_: Request) -> Response:
        if probes.metrics is None:
            return Response("metrics disabled\n", status_code=404, media_type="text/plain")
        await _refresh(probes, probes.metrics)
        return Response(probes.metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(_: Request) -> Response:
        status, body = await (_fleet_health(probes) if isinstance(probes, FleetProbes) else _health(probes))
        return JSONResponse(body, status_code=status)

    async def readyz(_: Request) -> Response:
        answer = _fleet_readiness(probes) if isinstance(probes, FleetProbes) else _readiness(probes)
        status, body = await answer
        return JSONResponse(body, status_code=status)

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
