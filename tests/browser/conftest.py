"""Browser tests: a real headless Chromium (Debian's ``chromium``) driven by Playwright, against the
dashboard served by uvicorn on loopback, in the same event loop as the emulator-backed worker bench.

Playwright cannot download its own browsers here, so it launches ``/usr/bin/chromium`` (or
``BITRIX_WORKER_CHROMIUM``); when that or the ``playwright`` package is missing, every test here is skipped
with the reason (``.ci/run`` installs chromium).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from harness import Bench, open_bench  # noqa: E402

from bitrix_worker.dashboard import create_app  # noqa: E402
from bitrix_worker.dashboard.server import bind  # noqa: E402

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


def _why_not() -> str | None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set BITRIX_WORKER_CHROMIUM)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _why_not()
    if reason is None:
        return
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.skip(reason=f"browser tests skipped: {reason}"))


@pytest.fixture
async def bench(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Bench]:
    async with open_bench(redis_url, key_prefix, tmp_path) as b:
        yield b


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
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


def _expected(message: str) -> bool:
    """Chromium logs every 4xx document as an error; a refusal (400 bad input, 403 CSRF) is what some tests
    ask for. Anything else (404 asset, 500, CSP violation, script error) fails the test."""
    return message.startswith("Failed to load resource: the server responded with a status of 40") and (
        "status of 400" in message or "status of 403" in message
    )


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (own cookies) and page; fails the test on any page error or CSP violation."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(msg.text) if msg.type == "error" and not _expected(msg.text) else None,
    )
    page.set_default_timeout(15_000)
    yield page
    await context.close()
    assert not problems, problems


WaitFor = Callable[[Callable[[], Awaitable[bool]]], Awaitable[None]]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)
