"""Full requests (``gathering``): claims that fill a request when validation refuses some entries, the tail's
retries travelling together, and requests not sent once this process has paused the portal.

Real Redis, the emulator on loopback; the request counts come from the emulator's statistics."""

from __future__ import annotations

import asyncio
from typing import Any

from harness import Bench

from bitrix_worker.worker import Worker


async def batch_sizes(bench: Bench) -> dict[int, int]:
    stats = await bench.admin.stats()
    return {int(k): v for k, v in stats["batch_sizes"].items()}


async def test_claims_take_more_when_validation_refuses_some_so_requests_go_full(bench: Bench) -> None:
    # Every 10th create names a currency the portal does not have: field validation dead-letters it with no
    # call. A claim of 10 would make requests of 9; the next claims take the shortfall more, and a batch with
    # more commands than a request holds hands the rest to the next batch.
    for i in range(100):
        fields = {"TITLE": f"d{i}", "CURRENCY_ID": "XXX" if i % 10 == 0 else "USD"}
        await bench.enqueue("create", f"k-{i}", fields)
    summary = await bench.run(batch_size=10, concurrency=1, tail_linger_s=0)
    assert summary.outcomes == {"applied": 90, "dead_lettered": 10}
    deals = await bench.entities()
    assert sorted(d["TITLE"] for d in deals) == sorted(f"d{i}" for i in range(100) if i % 10)  # each once
    sizes = await batch_sizes(bench)
    sizes[3] -= 2  # the deal schema's two requests (fields, currencies, pipelines; then three status lists)
    assert sizes.get(10, 0) >= 7, sizes  # without taking more: ten requests of 9
    assert sum(sizes.values()) <= 10, sizes  # 90 commands: 9 (before anything was noted), then mostly 10
    assert len(await bench.dead()) == 10


async def test_retries_at_the_tail_travel_in_one_request(bench: Bench) -> None:
    # The last batch's first three commands answer 500 (not run). Their retries fall due at spread times
    # within a second; they are gathered and sent together instead of one request each as each falls due.
    for i in range(10):
        await bench.enqueue("create", f"t-{i}", {"TITLE": f"t{i}"})
    assert (await bench.run(batch_size=10, validate_fields=False)).outcomes == {"applied": 10}
    await bench.admin.set_faults(
        rules=[{"method": "crm.deal.update", "scope": "command", "sequence": ["500", "500", "500"]}]
    )
    for i in range(10):
        await bench.enqueue("update", f"t-{i}", {"TITLE": f"u{i}"})
    summary = await bench.run(
        batch_size=10, validate_fields=False, backoff_base_s=1.0, backoff_max_s=1.0, tail_linger_s=2.0
    )
    assert summary.outcomes == {"applied": 10}
    assert sorted(d["TITLE"] for d in await bench.entities()) == sorted(f"u{i}" for i in range(10))
    # Without gathering: a request per 0.1 s tick in which one falls due (three, as a rule). The gathering
    # holds the first due retry while the others are expected, and promotes each itself as it falls due:
    # a retry due but not yet promoted by the timer is still expected (about one run in four sent the last
    # one alone when its due time was forgotten as soon as it passed).
    assert await batch_sizes(bench) == {10: 2, 3: 1}


async def test_no_gathering_sends_each_claim_at_once(bench: Bench) -> None:
    await bench.enqueue("create", "a", {"TITLE": "a"})
    settings = bench.settings.model_copy(update={"validate_fields": False, "tail_linger_s": 0.0})
    async with Worker.open(settings) as worker:
        await asyncio.wait_for(worker.run(until_idle=True), 30)
        assert not worker.gathering.held
    assert await bench.total_calls("crm.deal.add") == 1


async def test_requests_waiting_for_their_slot_when_the_portal_pauses_are_not_sent(bench: Bench) -> None:
    # Four batches of one wait at the limiter (1 request/s); the first meets an auth outage and pauses the
    # portal. The others got their slots after that: they are held without being sent, so the portal sees
    # one refused request per outage, not one per batch already planned.
    await bench.admin.set_faults(auth_outage={"start_s": 0, "duration_s": 4.0})
    for i in range(4):
        await bench.enqueue("create", f"o-{i}", {"TITLE": "x"})
    fast: dict[str, Any] = {"batch_size": 1, "concurrency": 4, "validate_fields": False}
    fast |= {"rate_per_s": 1.0, "rate_burst": 3, "breaker_cooldown_s": 5.0, "breaker_max_cooldown_s": 10.0}
    settings = bench.with_settings(**fast).settings
    async with Worker.open(settings) as worker:
        summary = await asyncio.wait_for(worker.run(until_idle=True), 60)
    assert summary.outcomes == {"applied": 4}
    assert len(await bench.entities()) == 4
    refused = (await bench.calls("crm.deal.add"))["INVALID_CREDENTIALS"]
    assert refused == 1, await bench.admin.stats()
