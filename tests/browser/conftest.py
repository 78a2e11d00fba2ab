"""Browser tests: a real headless Chromium (Debian's ``chromium``) driven by Playwright, against the
dashboard served by uvicorn on loopback, in the same event loop as the emulator-backed worker bench.

Playwright cannot download its own browsers here, so it launches ``/usr/bin/chromium`` (or
``BITRIX_WORKER_CHROMIUM``); when that or the ``playwright`` package is missing, every test here is skipped
with the reason (``.ci/run`` installs chromium).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from browser_harness import CHROMIUM, CHROMIUM_ARGS, WEBHOOK_SECRET
from harness import Bench, open_bench


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


@pytest.fixture(autouse=True)
def _no_secret_printed(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Nothing the worker or the dashboard printed during the test holds the webhook secret."""
    yield
    out, err = capfd.readouterr()
    assert WEBHOOK_SECRET not in out + err
