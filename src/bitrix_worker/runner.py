"""Running a worker process: logging, signals, the optional HTTP endpoints, then the loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.routing import Route

from .config import Settings
from .errors import ConfigError
from .events import EventFanout, RunSummary, WorkerEvents
from .logs import configure_logging
from .metrics import PrometheusEvents
from .monitoring import FleetProbes, HttpServer, Probes, create_app
from .portals.install import install_route_for
from .worker import Worker

REDIS_POOL_BASE = 100
REDIS_POOL_PER_PORTAL = 12


async def run_worker(
    settings: Settings, *, until_idle: bool = False, events: WorkerEvents | None = None, check: bool = True
) -> RunSummary:
    """Run until stopped (or idle), with /metrics, /healthz and /readyz on ``http_port`` unless it is 0."""
    secrets = [settings.webhook.secret] if settings.webhook_url else []
    configure_logging(fmt=settings.log_format, level=settings.log_level, secrets=secrets)
    metrics = PrometheusEvents(portals=settings.metrics_portals if settings.portals else None)
    subscribers = EventFanout(metrics, events) if events is not None else metrics
    if settings.portals:
        await run_fleet(settings, until_idle=until_idle, events=subscribers, metrics=metrics)
        return RunSummary()
    async with contextlib.AsyncExitStack() as stack:
        worker = await stack.enter_async_context(Worker.open(settings, events=subscribers))
        if check:
            await worker.portal.check()
        extra = []
        if settings.install_enabled:  # POST /install on the HTTP port (portals/install.py)
            gate = worker.portal.gate
            own = settings.portal
            route = install_route_for(settings, lambda pid: gate if pid == own else None)
            extra.append(await stack.enter_async_context(route))
        task = asyncio.create_task(worker.run(until_idle=until_idle))
        with _signals_stop(worker.stop):
            http = None
            if settings.http_port:
                probes = Probes(
                    settings,
                    worker.reader,
                    worker.store,
                    worker.portal.gate,
                    lambda: not task.done(),
                    metrics,
                    stuck=worker.stuck,
                )
                http = await _start_http(settings, create_app(probes, extra), worker.stop, task)
            try:
                return await task
            finally:
                if http is not None:
                    await http.stop()


@contextlib.contextmanager
def _signals_stop(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT call ``stop`` (a graceful drain) while the block runs."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _start_http(
    settings: Settings, app: Starlette, stop: Callable[[], None], task: asyncio.Task[Any]
) -> HttpServer:
    """Serve ``app`` on ``BITRIX_WORKER_HTTP_PORT``; a port that cannot be bound stops the work and is a
    ConfigError naming the setting."""
    http = HttpServer(app, settings.http_host, settings.http_port)
    try:
        await http.start()
    except OSError as exc:
        stop()
        await task
        raise ConfigError(
            "BITRIX_WORKER_HTTP_PORT", f"cannot listen on {settings.http_host}:{settings.http_port}: {exc}"
        ) from None
    structlog.get_logger("bitrix_worker.monitoring").info(
        "http endpoints up", url=f"http://{settings.http_host}:{http.port}/metrics"
    )
    return http


async def run_fleet(
    settings: Settings,
    *,
    until_idle: bool = False,
    events: WorkerEvents | None = None,
    metrics: PrometheusEvents | None = None,
) -> None:
    """``BITRIX_WORKER_PORTALS``: one loop per portal of this process's share (fleet.py), with /metrics
    (``metrics``' series labelled by portal), /healthz, /readyz and /install on ``http_port`` unless 0."""
    from .fleet import PortalFleet, portal_settings
    from .gate import PortalGate
    from .mapping import MappingStore
    from .portals.registry import PortalRegistry
    from .portals.secrets import SecretBox
    from .redis.connection import client_for, ping_or_fail
    from .redis.gauges import QueueReader

    key = settings.secrets_key.get_secret_value() if settings.secrets_key else None
    box = SecretBox.from_setting(key)
    async with contextlib.AsyncExitStack() as stack:
        registry = await PortalRegistry.connect(settings.database_url, box=box, table=settings.portals_table)
        stack.push_async_callback(registry.close)
        # per portal loop at most: a blocking read, a command per batch in flight, four duties; room to grow
        pool = REDIS_POOL_BASE + REDIS_POOL_PER_PORTAL * len(await registry.records())
        redis = client_for(
            settings.redis_url, name=f"bitrix-worker:{settings.consumer}", max_connections=pool
        )
        stack.push_async_callback(redis.aclose)
        await ping_or_fail(redis, settings.redis_url)
        store = await MappingStore.connect(settings.database_url)
        stack.push_async_callback(store.close)
        fleet = PortalFleet(settings, redis, store, registry, events, settings.portal_ids)
        extra: list[Route] = []
        if settings.install_enabled:  # a new portal is served from the fleet's next heartbeat
            route = install_route_for(
                settings, lambda pid: PortalGate.from_settings(redis, portal_settings(settings, pid, None))
            )
            extra.append(await stack.enter_async_context(route))
        task = asyncio.create_task(fleet.run(until_idle=until_idle))
        with _signals_stop(fleet.stop):
            http = None
            if settings.http_port:
                probes = FleetProbes(
                    settings,
                    QueueReader(redis, settings.keys, settings.group),
                    store,
                    registry,
                    lambda: {pid: served.worker for pid, served in fleet.served.items()},
                    lambda: not task.done(),
                    metrics,
                )
                http = await _start_http(settings, create_app(probes, extra), fleet.stop, task)
            try:
                await task
            finally:
                if http is not None:
                    await http.stop()
