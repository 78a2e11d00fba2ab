"""Screenshots of the dashboard on demo-like data: the overview, a search result and a dead letter.

They land in ``BITRIX_WORKER_SCREENSHOTS`` when set (docs/img is refreshed with
``BITRIX_WORKER_SCREENSHOTS=docs/img pytest tests/browser/test_screenshots.py``), else in the test's tmp dir.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from browser_harness import eventually, serve_dashboard
from harness import Bench


async def _demo_data(bench: Bench) -> None:
    """Orders created and updated through a portal that refuses some currencies and fails now and then."""
    bench.with_settings(retries_invalid_data=0, retries_server_error=3)
    await bench.admin.set_faults(
        rules=[
            {"method": "crm.deal.add", "kind": "invalid", "probability": 0.08, "scope": "command"},
            {"method": "crm.deal.update", "kind": "500", "probability": 0.1, "scope": "command"},
        ]
    )
    for i in range(60):
        await bench.enqueue(
            "create", f"order-{1000 + i}", {"TITLE": f"Order #{1000 + i}", "OPPORTUNITY": 100 + i}, 1
        )
    await bench.run()
    for i in range(60):
        await bench.enqueue("update", f"order-{1000 + i}", {"STAGE_ID": "WON"}, 2)
    await bench.enqueue("update", "order-1003", {"STAGE_ID": "LOSE"}, 1)  # late and older: skipped as stale
    await bench.enqueue_raw({"payload": '{"op": "create", "entity": "invoice", "key": "order-1099"}'})
    await bench.run()
    await bench.redis.hset(bench.settings.keys.workers, "shop-sync-1", await _now_ms(bench))


async def _now_ms(bench: Bench) -> int:
    seconds, micros = await bench.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_screenshots_of_demo_data(bench: Bench, page: Any, tmp_path: Path) -> None:
    out = Path(os.environ.get("BITRIX_WORKER_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs
    await _demo_data(bench)
    dead = await bench.redis.xrevrange(bench.settings.dead_stream)
    invalid = next(i.decode() for i, f in dead if b"invalid_data" in f[b"error"])
    key = json.loads(next(f for i, f in dead if i.decode() == invalid)[b"payload"])["key"]
    retried = [
        o["ident"] for o in await bench.outcomes() if o["outcome"] == "applied" and o["attempts"] != "0"
    ]
    shown = retried[0].split(":", 1)[1] if retried else "order-1003"
    async with serve_dashboard(bench) as url:
        await page.goto(url + "/")

        async def chart_drawn() -> bool:
            return bool(await page.locator("#chart canvas").count())

        await eventually(chart_drawn)
        await page.screenshot(path=str(out / "dashboard-overview.png"), full_page=True)
        await page.goto(f"{url}/find?q={shown}")
        await page.screenshot(path=str(out / "dashboard-find.png"), full_page=True)
        await page.goto(f"{url}/dead/{invalid}")
        await page.screenshot(path=str(out / "dashboard-dead-letter.png"), full_page=True)
    for name in ("dashboard-overview.png", "dashboard-find.png", "dashboard-dead-letter.png"):
        assert (out / name).stat().st_size > 20_000, name
    assert key.startswith("order-")
