"""The seed's six cases, end to end: exact Bitrix24 call counts and outcomes (real Redis, real HTTP)."""

from __future__ import annotations

import asyncio
import io
import itertools
import json

import pytest
from harness import Bench

from bitrix_worker.logs import configure_logging
from bitrix_worker.mapping import MappingStore


async def mapping_state(bench: Bench, key: str) -> str | None:
    store = await MappingStore.connect(bench.settings.database_url)
    try:
        m = await store.get("deal", key)
        return m.state if m else None
    finally:
        await store.close()


async def test_update_of_deleted_deal_costs_one_call_and_is_skipped(bench: Bench) -> None:
    await bench.enqueue("create", "order-1", {"TITLE": "Order 1"})
    await bench.run()
    (deal,) = await bench.entities()
    await bench.admin.delete_entity("deal", int(deal["ID"]))
    await bench.enqueue("update", "order-1", {"STAGE_ID": "WON"}, version=2)
    summary = await bench.run()
    assert await bench.total_calls("crm.deal.update") == 1
    assert summary.outcomes == {"skipped": 1}
    last = (await bench.outcomes())[-1]
    assert (last["outcome"], last["reason"]) == ("skipped", "deleted_in_bitrix24")
    assert await mapping_state(bench, "order-1") == "deleted"
    # a later update of the same key costs no call at all
    await bench.enqueue("update", "order-1", {"STAGE_ID": "LOSE"}, version=3)
    await bench.run()
    assert await bench.total_calls("crm.deal.update") == 1


async def test_create_answered_not_found_is_dead_lettered_after_two_calls_and_logged(bench: Bench) -> None:
    sink = io.StringIO()
    configure_logging(fmt="json", level="info", secrets=[bench.settings.webhook.secret], stream=sink)
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "not_found"}])
    await bench.enqueue("create", "order-2", {"TITLE": "x"})
    await bench.run()
    assert await bench.total_calls("crm.deal.add") == 2
    ((payload, error),) = await bench.dead()
    assert payload["key"] == "order-2"
    assert (error["class"], error["attempts"], error["description"]) == ("not_found", 2, "Not found")
    lines = [json.loads(line) for line in sink.getvalue().splitlines()]
    assert any(line["level"] == "error" and line["event"] == "dead-lettered" for line in lines)


async def test_invalid_data_is_dead_lettered_after_zero_calls_with_the_field(bench: Bench) -> None:
    """Field validation (on by default) refuses the unknown currency before any call, naming the field."""
    await bench.enqueue("create", "order-3", {"TITLE": "x", "CURRENCY_ID": "XXX"})
    await bench.run()
    assert await bench.total_calls("crm.deal.add") == 0
    ((payload, error),) = await bench.dead()
    assert payload["fields"] == {"TITLE": "x", "CURRENCY_ID": "XXX"}  # original payload unchanged
    assert (error["class"], error["attempts"], error["history"]) == ("invalid_data", 0, [])
    assert "CURRENCY_ID = 'XXX' is not in the list" in error["description"]
    assert "EUR" in error["description"]
    (last,) = await bench.outcomes()
    assert (last["outcome"], last["code"], last["class"]) == ("dead_lettered", "invalid_data", "invalid_data")
    assert last["reason"].startswith("invalid data: not_in_list CURRENCY_ID: expected a currency")
    assert "XXX" not in last["reason"]  # the value is the producer's data: only in the dead letter


async def test_invalid_data_refused_by_the_portal_is_dead_lettered_after_two_calls(bench: Bench) -> None:
    """The portal's own refusal (what happens without validation): validation is turned off on purpose."""
    await bench.enqueue("create", "order-3", {"TITLE": "x", "CURRENCY_ID": "XXX"})
    await bench.run(validate_fields=False)
    assert await bench.total_calls("crm.deal.add") == 2
    ((payload, error),) = await bench.dead()
    assert payload["fields"] == {"TITLE": "x", "CURRENCY_ID": "XXX"}  # original payload unchanged
    assert error["class"] == "invalid_data"
    assert "Currency" in error["description"]
    assert [h["class"] for h in error["history"]] == ["invalid_data", "invalid_data"]


async def test_server_error_of_its_own_retries_five_times_with_growing_delays(bench: Bench) -> None:
    """An operation whose command fails while the portal answers the others is failing on its own: the
    seed's budget applies (1 + 5 calls), with full-jitter delays; alone, its later requests fail whole and
    still count as its own (it failed while the portal was healthy)."""
    await bench.enqueue("create", "order-4", {"TITLE": "x"})
    await bench.run()
    await bench.admin.set_faults(rules=[{"method": "crm.deal.update", "kind": "500"}])
    await bench.enqueue("update", "order-4", {"TITLE": "y"})
    await bench.enqueue("create", "order-4b", {"TITLE": "healthy neighbour"})
    await bench.run()
    assert await bench.total_calls("crm.deal.update") == 6
    ((_, error),) = await bench.dead()
    assert error["class"] == "server_error"
    assert error["attempts"] == 6
    times = [h["at_ms"] for h in error["history"]]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 5
    # full jitter: each gap is at most base * 2**(n-1) (capped) plus scheduling slack
    assert all(g <= min(200, 20 * 2**i) + 250 for i, g in enumerate(gaps))


async def test_a_lone_operation_failing_whole_requests_is_held_until_the_portal_proves_healthy(
    bench: Bench,
) -> None:
    """Alone, an operation's whole request failing could be the portal's fault: it spends nothing until the
    portal has answered (here the gate's read-only probe), then the seed's budget applies."""
    await bench.enqueue("create", "order-4", {"TITLE": "x"})
    await bench.run()
    await bench.admin.set_faults(rules=[{"method": "crm.deal.update", "kind": "500"}])
    await bench.enqueue("update", "order-4", {"TITLE": "y"})
    await bench.run()
    threshold = bench.settings.portal_failure_threshold
    assert await bench.total_calls("crm.deal.update") == threshold + 6  # held, then its own 1 + 5
    assert await bench.total_calls("crm.deal.fields") >= 1  # the probe that proved the portal healthy
    ((_, error),) = await bench.dead()
    assert error["attempts"] == threshold + 6
    assert sum(1 for h in error["history"] if h.get("portal")) == threshold + 6


async def test_server_error_recovers_in_time(bench: Bench) -> None:
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["500", "500", "ok"]}])
    await bench.enqueue("create", "order-5", {"TITLE": "x"})
    summary = await bench.run()
    assert summary.outcomes == {"applied": 1}
    assert await bench.total_calls("crm.deal.add") == 3
    assert len(await bench.entities()) == 1
    assert await bench.dead() == []


async def test_rate_limit_waits_longer_and_never_spends_the_failure_budget(bench: Bench) -> None:
    bench.with_settings(retries_server_error=1)
    refusals = ["rate_limit"] * 7
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["500", *refusals, "ok"]}])
    await bench.enqueue("create", "order-6", {"TITLE": "x"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    summary = await bench.run()
    elapsed = loop.time() - started
    assert summary.outcomes == {"applied": 1}
    assert await bench.total_calls("crm.deal.add") == 9  # 1 failure + 7 refusals + success
    assert await bench.dead() == []
    # equal jitter from 10 ms: at least half of 10, 20, 40, ... 640 ms
    assert elapsed >= sum(0.005 * 2**i for i in range(7))


async def test_an_auth_outage_pauses_the_portal_and_dead_letters_nothing(bench: Bench) -> None:
    """The seed dead-lettered the operation that met a revoked webhook. A webhook failing for every call is
    the portal's fault: the portal pauses at once, the operation and the backlog are held (no budget spent),
    read-only probes (no operation) find when it works again, and everything is delivered."""
    await bench.admin.set_faults(auth_outage={"start_s": 0})
    await bench.enqueue("create", "order-7", {"TITLE": "first"})
    from bitrix_worker.worker import Worker

    async with Worker.open(bench.settings) as worker:
        task = asyncio.create_task(worker.run())
        for _ in range(100):
            if (await worker.portal.gate.state()).open:
                break
            await asyncio.sleep(0.05)
        state = await worker.portal.gate.state()
        assert state.open
        assert state.reason.startswith("auth")
        # the first request was the deal schema's fetch (field validation, nothing cached yet): it met the
        # revoked webhook, so the operation was held before its own call
        assert await bench.total_calls("crm.deal.add") == 0
        for i in range(5):
            await bench.enqueue("create", f"backlog-{i}", {"TITLE": "waiting"})
        await asyncio.sleep(1.0)  # more than one cool-down: probes happen, the backlog is not touched
        assert await bench.total_calls("crm.deal.add") == 0
        assert await bench.total_calls("crm.deal.fields") >= 1  # probes spend no operation
        assert await bench.dead() == []
        await bench.admin.set_faults(auth_outage=None)  # the webhook is fixed
        for _ in range(100):
            if len(await bench.entities()) == 6:
                break
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(task, 10)
    assert len(await bench.entities()) == 6
    assert await bench.dead() == []


@pytest.mark.parametrize("kind", ["500", "502", "reset"])
async def test_a_portal_outage_of_whole_requests_dead_letters_nothing(bench: Bench, kind: str) -> None:
    """5xx answers, HTML gateway pages or broken connections on every request: after a short streak the
    portal pauses; nothing spends a budget however long it lasts; after it, everything is applied once."""
    bench.with_settings(retries_server_error=1, retries_network=1)  # a budget an outage would blow at once
    await bench.admin.set_faults(rules=[{"method": "*", "kind": kind}])
    for i in range(12):
        await bench.enqueue("create", f"outage-{i}", {"TITLE": "x"})
    from bitrix_worker.worker import Worker

    async with Worker.open(bench.settings.model_copy(update={"batch_size": 3})) as worker:
        task = asyncio.create_task(worker.run())
        for _ in range(200):
            if (await worker.portal.gate.state()).open:
                break
            await asyncio.sleep(0.05)
        assert (await worker.portal.gate.state()).open
        await asyncio.sleep(2.0)  # several probe intervals of the outage
        requests_during = (await bench.admin.stats())["requests"]
        await asyncio.sleep(1.0)
        # while paused, only the read-only probes go out: at most one per (growing) interval
        assert (await bench.admin.stats())["requests"] - requests_during <= 2
        assert await bench.dead() == []
        await bench.admin.set_faults(rules=[])
        for _ in range(200):
            if len(await bench.entities()) == 12:
                break
            await asyncio.sleep(0.05)
        worker.stop()
        await asyncio.wait_for(task, 10)
    origins = sorted(d["ORIGIN_ID"] for d in await bench.entities())
    assert origins == sorted(f"outage-{i}" for i in range(12))  # each exactly once
    assert await bench.dead() == []


async def test_batches_in_flight_during_an_outage_open_the_breaker_once(bench: Bench) -> None:
    from bitrix_worker.events import WorkerEvents
    from bitrix_worker.taxonomy import ErrorClass
    from bitrix_worker.worker import Worker

    class Breakers(WorkerEvents):
        def __init__(self) -> None:
            self.opened = 0

        def breaker(self, is_open: bool, reason: str) -> None:
            self.opened += is_open

        def outcome(self, outcome: str, reason: str, entity: str, error_class: ErrorClass | None) -> None:
            pass

    await bench.admin.set_faults(
        auth_outage={"start_s": 0, "duration_s": 0.3}, latency={"dist": "fixed", "s": 0.1}
    )
    for i in range(8):
        await bench.enqueue("create", f"o-{i}", {"TITLE": "x"})
    seen = Breakers()
    # about the breaker: field validation off, so no schema fetch meets the outage before the sends do
    settings = bench.settings.model_copy(update={"batch_size": 1, "concurrency": 4, "validate_fields": False})
    async with Worker.open(settings, events=seen) as worker:
        summary = await asyncio.wait_for(worker.run(until_idle=True), 30)
    assert summary.outcomes == {"applied": 8}
    assert seen.opened == 1  # four refused batches, one outage, one cool-down
    assert len(await bench.entities()) == 8
