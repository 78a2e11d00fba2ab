"""Running a worker process: logging, signals, the optional HTTP endpoints, then the loop."""

from __future__ import annotations

import asyncio
import signal

from .config import Settings
from .logs import configure_logging
from .worker import RunSummary, Worker


async def run_worker(settings: Settings, *, until_idle: bool = False) -> RunSummary:
    configure_logging(fmt=settings.log_format, level=settings.log_level, secrets=[settings.webhook.secret])
    async with Worker.open(settings) as worker:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        return await worker.run(until_idle=until_idle)
