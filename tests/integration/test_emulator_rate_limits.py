"""Leaky bucket and operating-time limit over real HTTP (real clock)."""

from __future__ import annotations

import asyncio
import math
import time

import httpx

from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer

QUERY_LIMIT = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
OPERATION_LIMIT = {
    "error": "OPERATION_TIME_LIMIT",
    "error_description": "Method is blocked due to operation time limit.",
}


async def _burst(client: httpx.AsyncClient, n: int) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.post("crm.deal.list", json={}) for _ in range(n))))


async def _steady(client: httpx.AsyncClient, rate_per_s: float, duration_s: float) -> list[int]:
    """Calls spaced at least 1/rate apart (so scheduler jitter can only make us slower, never faster)."""
    statuses = []
    for _ in range(round(rate_per_s * duration_s)):
        await asyncio.sleep(1 / rate_per_s)
        statuses.append((await client.post("crm.deal.list", json={})).status_code)
    return statuses


async def test_burst_of_60_gets_50_answers_and_10_refusals() -> None:
    async with EmulatorServer() as server, httpx.AsyncClient(base_url=server.webhook_url) as client:
        responses = await _burst(client, 60)
        ok = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 503]
        assert 50 <= len(ok) <= 51  # a request may land after a sliver of drain
        assert len(ok) + len(refused) == 60
        assert all(r.json() == QUERY_LIMIT for r in refused)  # and no time block
        async with EmulatorAdmin(server.base_url) as admin:
            stats = await admin.stats()
        assert stats["calls"]["crm.deal.list"] == {"ok": len(ok), "QUERY_LIMIT_EXCEEDED": len(refused)}


async def test_steady_two_per_second_after_a_full_burst_is_never_refused() -> None:
    """Default plan, real time: fill the bucket, then 2 calls/s for 5 s — the drain keeps up exactly."""
    async with EmulatorServer() as server, httpx.AsyncClient(base_url=server.webhook_url) as client:
        filled = await _burst(client, 50)
        assert all(r.status_code == 200 for r in filled)
        assert await _steady(client, 2.0, 5.0) == [200] * 10


async def test_steady_rate_at_faster_drain_and_overflow_above_it() -> None:
    """The 30 s acceptance run compressed: drain 20/s for 3 s; then 40/s overflows."""
    config = EmulatorConfig(drain_per_s=20.0)
    async with EmulatorServer(config) as server, httpx.AsyncClient(base_url=server.webhook_url) as client:
        assert all(r.status_code == 200 for r in await _burst(client, 50))
        assert await _steady(client, 20.0, 3.0) == [200] * 60
        statuses = []
        for _ in range(40):  # 40 calls as fast as we can (well above 20/s on loopback)
            statuses.append((await client.post("crm.deal.list", json={})).status_code)
        assert statuses.count(503) > 0


async def test_batch_counts_as_one_request() -> None:
    config = EmulatorConfig(burst=2)
    async with EmulatorServer(config) as server, httpx.AsyncClient(base_url=server.webhook_url) as client:
        cmd = [f"crm.deal.add?fields[TITLE]=t{i}" for i in range(50)]
        for _ in range(2):
            r = await client.post("batch", json={"cmd": cmd})
            assert len(r.json()["result"]["result"]) == 50
        r = await client.post("batch", json={"cmd": cmd})
        assert (r.status_code, r.json()) == (503, QUERY_LIMIT)


async def test_operating_time_limit_and_reset_at() -> None:
    config = EmulatorConfig(processing_s={"crm.deal.add": 100.0, "crm.deal.upd*": 200.0})
    async with EmulatorServer(config) as server, httpx.AsyncClient(base_url=server.webhook_url) as client:
        first_call = time.time()
        times = []
        for i in range(5):  # 0, 100, ..., 400 s used before each call: all under 480
            r = await client.post("crm.deal.add", json={"fields": {"TITLE": f"t{i}"}})
            assert r.status_code == 200
            times.append(r.json()["time"])
        assert [t["operating"] for t in times] == [100, 200, 300, 400, 500]
        assert times[0]["processing"] == 100
        assert math.floor(first_call) + 600 <= times[-1]["operating_reset_at"] <= math.ceil(time.time()) + 600
        r = await client.post("crm.deal.add", json={"fields": {"TITLE": "blocked"}})
        assert (r.status_code, r.json()) == (429, OPERATION_LIMIT)
        r = await client.post("crm.deal.get", json={"id": 1})
        assert r.status_code == 200  # other methods keep working
        assert r.json()["time"]["operating"] == 0

        # nested batch commands are charged to their own method; the batch itself is not charged
        cmd = {"add": "crm.deal.add?fields[TITLE]=x", "upd1": "crm.deal.update?id=1&fields[TITLE]=y"}
        cmd |= {f"upd{i}": f"crm.deal.update?id=1&fields[TITLE]=z{i}" for i in (2, 3, 4)}
        r = await client.post("batch", json={"cmd": cmd})
        inner = r.json()["result"]
        assert inner["result_error"] == {"add": OPERATION_LIMIT, "upd4": OPERATION_LIMIT}  # 0, 200, 400 < 480
        assert inner["result_time"]["upd3"]["operating"] == 600
        assert r.json()["time"]["operating"] == 0

        async with EmulatorAdmin(server.base_url) as admin:
            assert (await admin.stats())["operating"]["crm.deal.add"] == 500
            await admin.set_limits(operating_limit_s=10_000)  # raise the limit at run time
        r = await client.post("crm.deal.add", json={"fields": {"TITLE": "free again"}})
        assert r.status_code == 200


async def test_operating_window_expires() -> None:
    config = EmulatorConfig(operating_window_s=1.0, operating_limit_s=2.0, processing_s={"crm.lead.add": 1.0})
    async with EmulatorServer(config) as server, httpx.AsyncClient(base_url=server.webhook_url) as client:
        for _ in range(2):
            r = await client.post("crm.lead.add", json={"fields": {}})
            assert r.status_code == 200
        reset_at = r.json()["time"]["operating_reset_at"]
        assert (await client.post("crm.lead.add", json={"fields": {}})).status_code == 429
        await asyncio.sleep(max(0.0, reset_at - time.time()) + 0.05)
        assert (await client.post("crm.lead.add", json={"fields": {}})).status_code == 200


async def test_limits_can_be_disabled() -> None:
    config = EmulatorConfig(burst=1, limits_enabled=False)
    async with EmulatorServer(config) as server, httpx.AsyncClient(base_url=server.webhook_url) as client:
        assert all(r.status_code == 200 for r in await _burst(client, 20))
