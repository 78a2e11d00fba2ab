"""The dashboard used as a person would: headless Chromium against a real Redis, emulator and worker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from browser_harness import WEBHOOK_SECRET, eventually, serve_dashboard
from harness import Bench


async def _html(page: Any) -> str:
    text: str = await page.content()
    assert WEBHOOK_SECRET not in text
    return text


async def _number(page: Any, selector: str) -> int:
    return int((await page.locator(selector).inner_text()).strip())


async def test_overview_counters_move_while_a_worker_runs(bench: Bench, page: Any) -> None:
    bench.with_settings(rate_per_s=20, rate_burst=2, batch_size=2)  # ~4 s for 150 operations
    for i in range(150):
        await bench.enqueue("create", f"order-{i}", {"TITLE": f"#{i}"})
    async with serve_dashboard(bench) as url:
        await page.goto(url + "/")
        assert await _number(page, "#backlog") == 150
        assert await _number(page, "#applied") == 0
        await page.evaluate("window.sameDocument = true")  # gone if the page reloads
        worker = asyncio.create_task(bench.run(timeout_s=60))
        seen: set[int] = set()

        async def all_applied() -> bool:
            seen.add(await _number(page, "#applied"))
            return 150 in seen

        await eventually(all_applied, timeout_s=40)
        assert (await worker).outcomes == {"applied": 150}
        assert len(seen - {0, 150}) >= 1, f"no intermediate count seen: {sorted(seen)}"
        await eventually(lambda: _backlog_zero(page))
        assert await page.evaluate("window.sameDocument") is True
        assert await page.locator("#chart canvas").count() == 1  # uPlot drew the chart
        assert "alive" in await page.locator("#live").inner_text()
        await _html(page)


async def _backlog_zero(page: Any) -> bool:
    return await _number(page, "#backlog") == 0


async def test_search_an_order_and_see_its_history(bench: Bench, page: Any) -> None:
    await bench.enqueue("create", "order-42", {"TITLE": "forty-two"}, version=1)
    await bench.run()
    await bench.enqueue("update", "order-42", {"STAGE_ID": "WON"}, version=2)
    await bench.run()
    (deal,) = await bench.entities()
    async with serve_dashboard(bench) as url:
        await page.goto(url + "/find")
        await page.fill("input[name=q]", "order-42")
        await page.click("button:has-text('Find')")
        await page.wait_for_selector("#outcomes")
        rows = await page.locator("#outcomes tr").all_inner_texts()
        assert "updated" in rows[1]
        assert "applied" in rows[1]
        assert "created" in rows[2]
        assert (await page.locator("#bitrix-id").inner_text()).strip() == str(deal["ID"])
        link = await page.locator("#bitrix-id a").get_attribute("href")
        assert link == f"{bench.emulator.base_url}/crm/deal/details/{deal['ID']}/"
        await page.click(f"#outcomes a:text('{rows[2].split()[0]}')")  # search by its stream id
        await page.wait_for_selector("text=found by stream id")
        assert "deal:order-42" in await _html(page)


async def _dead_letter(bench: Bench, key: str, fields: dict[str, Any]) -> str:
    bench.with_settings(retries_invalid_data=0)
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "invalid"}])
    await bench.enqueue("create", key, fields)
    await bench.run()
    await bench.admin.clear_faults()  # the fix
    rows = await bench.redis.xrange(bench.settings.dead_stream)
    return str(rows[-1][0].decode())


async def test_replay_a_dead_letter_and_see_it_applied(bench: Bench, page: Any) -> None:
    dead_id = await _dead_letter(bench, "order-7", {"TITLE": "seven"})
    async with serve_dashboard(bench) as url:
        await page.goto(url + "/dead")
        await page.click(f"a:text('{dead_id}')")
        assert (await page.locator("#error-class").inner_text()).strip() == "invalid_data"
        await page.click("text=Replay unchanged…")
        await page.wait_for_selector("#confirm")
        assert await bench.redis.xlen(bench.settings.dead_stream) == 1  # nothing happens before confirming
        await page.click("#confirm")
        assert "Replayed 1 of 1" in await page.locator("#result").inner_text()
        assert (await bench.run()).outcomes == {"applied": 1}
        await page.click("a:text('deal:order-7')")
        rows = await page.locator("#outcomes tr").all_inner_texts()
        assert "applied" in rows[1]
        assert "created" in rows[1]
        assert "dead_lettered" in rows[2]


async def test_edit_a_payload_then_replay_it(bench: Bench, page: Any) -> None:
    dead_id = await _dead_letter(bench, "order-8", {"TITLE": "typo"})
    async with serve_dashboard(bench) as url:
        await page.goto(f"{url}/dead/{dead_id}")
        await page.fill("#payload", '{"op": "create", "entity": "deal"}')
        await page.click("text=Check and replay with this payload…")
        assert "key: Field required" in await page.locator("#payload-error").inner_text()
        fixed = {"op": "create", "entity": "deal", "key": "order-8", "fields": {"TITLE": "fixed"}}
        await page.fill("#payload", json.dumps(fixed))
        await page.click("text=Check and replay with this payload…")
        await page.click("#confirm")
        assert "original is kept" in await page.locator("#result").inner_text()
    assert (await bench.run()).outcomes == {"applied": 1}
    (deal,) = await bench.entities()
    assert deal["TITLE"] == "fixed"


async def _seed_dead(bench: Bench, n: int) -> list[str]:
    ids = []
    for i in range(n):
        payload = json.dumps({"op": "update", "entity": "deal", "key": f"k{i}", "fields": {}})
        error = json.dumps({"class": "auth", "description": f"refused {i}", "attempts": 2, "history": []})
        ids.append(
            (
                await bench.redis.xadd(bench.settings.dead_stream, {"payload": payload, "error": error})
            ).decode()
        )
    return ids


async def test_purge_asks_for_confirmation(bench: Bench, page: Any) -> None:
    ids = await _seed_dead(bench, 3)
    async with serve_dashboard(bench) as url:
        await page.goto(url + "/dead")
        await page.check(f"input[value='{ids[1]}']")
        await page.click("text=Purge selected…")
        assert "Purge 1 dead letter?" in await page.locator("h1").inner_text()
        assert await bench.redis.xlen(bench.settings.dead_stream) == 3
        await page.click("#confirm")
        assert "Purged 1 dead letters." in await page.locator("#result").inner_text()
        remaining = [r[0].decode() for r in await bench.redis.xrange(bench.settings.dead_stream)]
        assert remaining == [ids[0], ids[2]]


async def test_a_post_without_the_csrf_token_is_refused(bench: Bench, page: Any) -> None:
    ids = await _seed_dead(bench, 1)
    async with serve_dashboard(bench) as url:
        await page.goto(url + "/dead")  # the browser now holds the CSRF cookie
        form = {"action": "purge", "scope": "ids", "id": ids[0], "confirm": "yes"}
        missing = await page.request.post(url + "/dead/action", form=form)
        wrong = await page.request.post(url + "/dead/action", form={**form, "csrf": "forged"})
        assert (missing.status, wrong.status) == (403, 403)
        assert "CSRF" in await missing.text()
        assert await bench.redis.xlen(bench.settings.dead_stream) == 1


async def test_read_only_mode_shows_no_buttons_and_refuses_posts(bench: Bench, page: Any) -> None:
    ids = await _seed_dead(bench, 2)
    async with serve_dashboard(bench, dashboard_read_only=True) as url:
        for path in ("/", "/find?q=k0", "/dead", f"/dead/{ids[0]}"):
            await page.goto(url + path)
            assert await page.locator("#read-only").count() == 1
            assert await page.locator("form[method=post]").count() == 0, path
            assert await page.locator("textarea").count() == 0
        assert await page.locator("#payload").count() == 1  # the payload is still shown
        html = await _html(page)
        csrf = html.split('name="csrf" value="')[1].split('"')[0] if 'name="csrf"' in html else ""
        refused = await page.request.post(
            url + "/dead/action",
            form={"action": "purge", "scope": "ids", "id": ids[0], "confirm": "yes", "csrf": csrf},
        )
        assert refused.status == 403
        assert await bench.redis.xlen(bench.settings.dead_stream) == 2


async def test_pause_and_resume_the_portal(bench: Bench, page: Any) -> None:
    from bitrix_worker.gate import PortalGate

    gate = PortalGate.from_settings(bench.redis, bench.settings)
    async with serve_dashboard(bench) as url:
        await page.goto(url + "/")
        await page.fill("#pause-form input[name=reason]", "CRM migration tonight")
        await page.click("text=Pause consumption…")
        assert not (await gate.state()).open  # nothing happens before confirming
        await page.click("#confirm")
        state = await gate.state()
        assert (state.open, state.manual, state.reason) == (True, True, "CRM migration tonight")
        await page.goto(url + "/")
        assert "PAUSED by an operator" in await page.locator("#breaker").inner_text()
        await page.click("text=Resume now (resets the breaker)…")
        await page.click("#confirm")
        assert not (await gate.state()).open
        await page.goto(url + "/")
        assert "closed" in await page.locator("#breaker").inner_text()
