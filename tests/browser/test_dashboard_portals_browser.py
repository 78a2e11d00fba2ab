"""A person picks a registry portal in a real browser: Portals page, that portal's pages under /p/<id>/, its
live section refreshed by htmx from its own stream. Skipped without Chromium (see conftest)."""

from __future__ import annotations

import json
from typing import Any

from browser_harness import eventually, serve_dashboard
from harness import Bench

from bitrix_worker.portal_layout import portal_dead_stream, portal_stream
from bitrix_worker.portals.model import PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key

ACME = "acme.example.com"


async def test_pick_a_portal_and_follow_its_pages(bench: Bench, page: Any) -> None:
    registry = await PortalRegistry.connect(bench.settings.database_url, box=SecretBox([new_key()]))
    try:
        url = f"https://{ACME}/rest/1/acmesecret0123456789/"
        await registry.add(PortalRecord(ACME, "webhook", f"https://{ACME}/rest/", webhook_url=url))
    finally:
        await registry.close()
    s = bench.settings
    stream = portal_stream(s.stream, ACME, s.default_portal)
    dead = portal_dead_stream(s.stream, s.dead_stream, ACME, s.default_portal)
    payload = json.dumps({"op": "update", "entity": "deal", "key": "k-1", "fields": {}})
    error = json.dumps({"class": "auth", "description": "auth", "attempts": 1, "history": []})
    dead_id = (await bench.redis.xadd(dead, {"payload": payload, "error": error})).decode()
    async with serve_dashboard(bench) as base:
        await page.goto(base + "/")
        await page.click("#portals-link")
        await page.click(f"table#portals a:text-is('{ACME}')")
        assert ACME in await page.locator("#portal").inner_text()
        assert await page.locator("#backlog").inner_text() == "0"
        await bench.redis.xadd(stream, {"payload": payload})

        async def refreshed() -> bool:
            return bool(await page.locator("#backlog").inner_text() == "1")

        await eventually(refreshed)  # htmx polled /p/<id>/live, the portal's own stream
        await page.click("nav >> text=Dead letters")
        assert page.url.endswith(f"/p/{ACME}/dead")
        assert await page.locator(f"a:text-is('{dead_id}')").count() == 1
