"""The dashboard with a portal registry: the Portals page, and each page of one registry portal under
``/p/<id>/`` on that portal's own stream, dead letters, mapping table and gate. Real Redis, a SQLite registry,
httpx's ASGI transport to the real app; without registry portals nothing of this shows.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest
from harness import Bench

from bitrix_worker.dashboard import create_app
from bitrix_worker.mapping import DEFAULT_TABLE, MappingStore
from bitrix_worker.operations import Operation
from bitrix_worker.portal_layout import portal_dead_stream, portal_stream, portal_table
from bitrix_worker.portals.model import PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key
from bitrix_worker.producer import enqueue

ACME = "acme.example.com"
ACME_SECRET = "acmesecret0123456789"


def _client(bench: Bench) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(bench.settings, redis=bench.redis))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


@pytest.fixture
async def registered(bench: Bench) -> Bench:
    registry = await PortalRegistry.connect(bench.settings.database_url, box=SecretBox([new_key()]))
    try:
        url = f"https://{ACME}/rest/1/{ACME_SECRET}/"
        await registry.add(PortalRecord(ACME, "webhook", f"https://{ACME}/rest/", webhook_url=url))
    finally:
        await registry.close()
    return bench


def _streams(bench: Bench) -> tuple[str, str]:
    s = bench.settings
    default = s.default_portal
    return portal_stream(s.stream, ACME, default), portal_dead_stream(s.stream, s.dead_stream, ACME, default)


async def _dead_letter(
    bench: Bench, dead: str, key: str, entry_id: str = "*", version: int | None = None
) -> str:
    op = {"op": "update", "entity": "deal", "key": key, "fields": {}}
    payload = json.dumps(op if version is None else {**op, "version": version})
    error = json.dumps({"class": "auth", "description": "auth", "attempts": 1, "history": []})
    return (await bench.redis.xadd(dead, {"payload": payload, "error": error}, id=entry_id)).decode()


async def _applied(bench: Bench, key: str, bitrix_id: int, *, version: int | None = None) -> None:
    """What acme's worker writes when it applies ``key``: a row in acme's own mapping table."""
    table = portal_table(DEFAULT_TABLE, ACME, None)
    store = await MappingStore.connect(bench.settings.database_url, table=table)
    try:
        await store.record_applied("deal", key, bitrix_id=bitrix_id, version=version, fence=1)
    finally:
        await store.close()


async def test_without_registry_portals_nothing_changes(bench: Bench) -> None:
    async with _client(bench) as client:
        home = await client.get("/")
        assert home.status_code == 200
        assert "portals-link" not in home.text
        assert "/p/" not in home.text
        assert 'hx-get="/live"' in home.text
        assert 'action="/portal/pause"' in home.text
        empty = await client.get("/portals")
        assert "No portals in the portal registry" in empty.text
        unknown = await client.get(f"/p/{ACME}/dead")
        assert unknown.status_code == 404
        assert "Unknown portal" in unknown.text


async def test_each_registry_portal_has_its_own_pages(registered: Bench) -> None:
    bench = registered
    stream, dead = _streams(bench)
    op = Operation.model_validate({"op": "create", "entity": "deal", "key": "k-1", "fields": {"TITLE": "x"}})
    await enqueue(
        bench.redis,
        op,
        stream=bench.settings.stream,
        portal=ACME,
        default_portal=bench.settings.default_portal,
    )
    mine = await _dead_letter(bench, dead, "k-9")
    theirs = await _dead_letter(bench, bench.settings.dead_stream, "k-8", "1000-7")  # never mine's id
    await _applied(bench, "k-1", 77)
    base = f"/p/{ACME}"
    async with _client(bench) as client:
        home = (await client.get("/")).text
        assert 'id="portals-link"' in home
        listing = (await client.get("/portals")).text
        row = re.search(rf'<tr class="active" data-portal="{re.escape(ACME)}">(.*?)</tr>', listing, re.S)
        assert row, listing
        cells = re.findall(r'<td class="num">(?:<a [^>]*>)?([^<]+)', row.group(1))
        assert cells == ["1", "-", "1"]  # stream length, pending (no worker made the group yet), dead
        assert f'href="{base}/"' in row.group(1)
        assert "closed" in row.group(1)
        overview = (await client.get(f"{base}/")).text
        assert f'hx-get="{base}/live"' in overview
        assert f"<code>{stream}</code>" in overview
        assert f'action="{base}/portal/pause"' in overview
        assert re.search(r'id="backlog">1<', (await client.get(f"{base}/live")).text)
        dead_page = (await client.get(f"{base}/dead")).text
        assert mine in dead_page
        assert theirs not in dead_page
        assert "deal:k-8" not in dead_page
        assert (await client.get(f"{base}/dead/{mine}")).status_code == 200
        assert (await client.get(f"{base}/dead/{theirs}")).status_code == 404
        found = (await client.get(f"{base}/find", params={"entity": "deal", "q": "k-1"})).text
        assert 'id="bitrix-id"><a href="https://acme.example.com/crm/deal/details/77/"' in found
        for page in (home, listing, overview, dead_page, found):
            assert ACME_SECRET not in page
        assert (await client.get("/p/nope.example.com/")).status_code == 404


async def test_actions_on_a_portal_are_confirmed_and_stay_on_it(registered: Bench) -> None:
    bench = registered
    stream, dead = _streams(bench)
    mine = await _dead_letter(bench, dead, "k-9")
    await _dead_letter(bench, bench.settings.dead_stream, "k-8")
    base = f"/p/{ACME}"
    async with _client(bench) as client:
        csrf = _csrf((await client.get(f"{base}/dead")).text)
        refused = await client.post(f"{base}/dead/action", data={"action": "purge", "id": mine})
        assert refused.status_code == 403
        step1 = await client.post(f"{base}/dead/action", data={"csrf": csrf, "action": "purge", "id": mine})
        assert f'action="{base}/dead/action"' in step1.text
        assert await bench.redis.xlen(dead) == 1  # not before it is confirmed
        form = {"csrf": csrf, "action": "purge", "id": mine, "confirm": "yes"}
        done = await client.post(f"{base}/dead/action", data=form)
        assert "Purged 1 dead letters." in done.text
        assert f'href="{base}/dead"' in done.text
        assert (await bench.redis.xlen(dead), await bench.redis.xlen(bench.settings.dead_stream)) == (0, 1)

        ask = await client.post(f"{base}/portal/pause", data={"csrf": csrf, "reason": "maintenance"})
        assert f'action="{base}/portal/pause"' in ask.text
        gate = f"{{{stream}}}:breaker:{ACME}"
        assert not await bench.redis.hget(gate, "open")
        form = {"csrf": csrf, "reason": "maintenance", "confirm": "yes"}
        await client.post(f"{base}/portal/pause", data=form)
        assert await bench.redis.hget(gate, "open") == b"1"
        default_gate = bench.settings.keys.breaker(bench.settings.portal_name)
        assert await bench.redis.hget(default_gate, "open") != b"1"
        listing = (await client.get("/portals")).text
        assert re.search(rf'data-portal="{re.escape(ACME)}">.*?paused', listing, re.S)
        await client.post(f"{base}/portal/resume", data={"csrf": csrf, "confirm": "yes"})
        assert await bench.redis.hget(gate, "open") != b"1"


async def test_the_replay_guard_reads_the_portals_own_table(registered: Bench) -> None:
    bench = registered
    _, dead = _streams(bench)
    old = await _dead_letter(bench, dead, "k-5", version=3)
    await _applied(bench, "k-5", 5, version=5)
    async with _client(bench) as client:
        csrf = _csrf((await client.get(f"/p/{ACME}/dead")).text)
        form = {"csrf": csrf, "action": "replay", "id": old}
        step1 = await client.post(f"/p/{ACME}/dead/action", data=form)
        assert "the key is at version 5, this operation is version 3" in step1.text
