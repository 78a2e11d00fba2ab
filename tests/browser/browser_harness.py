"""What the browser tests share: where Chromium is, the dashboard served on loopback, polling."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from harness import Bench

from bitrix_worker.dashboard import create_app
from bitrix_worker.dashboard.server import bind

CHROMIUM = os.environ.get("BITRIX_WORKER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WEBHOOK_SECRET = "emulator-secret"


@asynccontextmanager
async def serve_dashboard(bench: Bench, **overrides: Any) -> AsyncIterator[str]:
    """The dashboard for the bench's settings (plus overrides) on a free loopback port; yields its URL."""
    settings = bench.with_settings(dashboard_refresh_s=0.5, **overrides).settings
    sock = bind("127.0.0.1", 0)
    config = uvicorn.Config(
        create_app(settings, redis=bench.redis), log_config=None, log_level="warning", access_log=False,
        lifespan="on", http="h11", ws="none",
    )  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: _started(server), timeout_s=10)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _started(server: uvicorn.Server) -> bool:
    return bool(server.started)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    """Poll ``check`` every 0.1 s until it is true; AssertionError after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)
