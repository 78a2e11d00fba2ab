"""Running a worker process: logging, signals, the optional HTTP endpoints, then the loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from .config import Settings
from .errors import ConfigError
from .events import EventFanout, RunSummary, WorkerEvents
from .logs import configure_logging
from .metrics import PrometheusEvents
from .monitoring import HttpServer, Probes, create_app
from .portals.install import install_route_for
from .worker import Worker


async def run_worker(
    settings: Settings, *, until_idle: bool = False, events: WorkerEvents | None = None, check: bool = True
) -> RunSummary:
    """Run until stopped (or idle), with /metrics, /healthz and /readyz on ``http_port`` unless it is 0."""
    secrets = [settings.webhook.secret] if settings.webhook_url else []
    configure_logging(fmt=settings.log_format, level=settings.log_level, secrets=secrets)
    metrics = PrometheusEvents()
    subscribers = EventFanout(metrics, events) if events is not None else metrics
    async with contextlib.AsyncExitStack() as stack:
        worker = await stack.enter_async_context(Worker.open(settings, events=subscribers))
        if check:
            await worker.portal.check()
        extra = []
        if settings.install_enabled:  # POST /install on the HTTP port (portals/install.py)
            extra.append(await stack.enter_async_context(install_route_for(settings, worker.portal.gate)))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        task = asyncio.create_task(worker.run(until_idle=until_idle))
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
            http = HttpServer(create_app(probes, extra), settings.http_host, settings.http_port)
            try:
                await http.start()
            except OSError as exc:
                worker.stop()
                await task
                raise ConfigError(
                    "BITRIX_WORKER_HTTP_PORT",
                    f"cannot listen on {settings.http_host}:{settings.http_port}: {exc}",
                ) from None
            structlog.get_logger("bitrix_worker.monitoring").info(
                "http endpoints up", url=f"http://{settings.http_host}:{http.port}/metrics"
            )
        try:
            return await task
        finally:
            if http is not None:
                await http.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
