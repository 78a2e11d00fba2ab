"""Batching, coalescing, per-key order and versions through a real worker."""

from __future__ import annotations

from harness import Bench


async def test_updates_arriving_together_are_coalesced_into_one_call(bench: Bench) -> None:
    await bench.enqueue("create", "c-1", {"TITLE": "a", "COMMENTS": "x"}, version=1)
    await bench.enqueue("update", "c-1", {"TITLE": "b"}, version=2)
    await bench.enqueue("update", "c-1", {"OPPORTUNITY": 10}, version=3)
    await bench.enqueue("update", "c-1", {"TITLE": "c"}, version=4)
    summary = await bench.run()
    assert summary.outcomes == {"applied": 4}  # each merged message is acked and accounted for
    assert await bench.total_calls("crm.deal.add") == 1
    assert await bench.total_calls("crm.deal.update") == 0
    (deal,) = await bench.entities()
    assert (deal["TITLE"], deal["COMMENTS"], deal["OPPORTUNITY"]) == ("c", "x", "10.00")


async def test_many_keys_go_out_in_one_batch_request(bench: Bench) -> None:
    for i in range(120):
        await bench.enqueue("create", f"k-{i}", {"TITLE": str(i)})
    await bench.run()
    stats = await bench.admin.stats()
    assert stats["calls"]["crm.deal.add"] == {"ok": 120}
    # 50 + 50 + 20 commands, plus the deal schema's one fetch (2 batch requests) for field validation
    assert sum(stats["calls"]["batch"].values()) == 3 + 2


async def test_operations_of_one_key_apply_in_stream_order(bench: Bench) -> None:
    await bench.enqueue("create", "o-1", {"TITLE": "created"})
    await bench.enqueue("update", "o-1", {"TITLE": "updated"})
    await bench.enqueue("delete", "o-1")
    await bench.enqueue("update", "o-1", {"TITLE": "after delete"})
    await bench.enqueue("create", "o-1", {"TITLE": "again"})
    summary = await bench.run()
    assert summary.outcomes == {"applied": 4, "skipped": 1}
    outcomes = [(o["op"], o["outcome"], o["reason"]) for o in await bench.outcomes()]
    assert outcomes == [
        ("create", "applied", "created"),
        ("update", "applied", "created"),  # coalesced into the create
        ("delete", "applied", "deleted"),
        ("update", "skipped", "deleted_in_bitrix24"),
        ("create", "applied", "created"),
    ]
    (deal,) = await bench.entities()
    assert deal["TITLE"] == "again"


async def test_update_waits_for_a_create_that_is_retrying(bench: Bench) -> None:
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["500", "500"]}])
    await bench.enqueue("create", "w-1", {"TITLE": "first"})
    await bench.enqueue("update", "w-2", {"TITLE": "other key"})
    summary = await bench.run(batch_size=1)
    assert summary.outcomes == {"applied": 1, "skipped": 1}
    await bench.enqueue("update", "w-1", {"TITLE": "second"})
    await bench.run()
    (deal,) = await bench.entities()
    assert deal["TITLE"] == "second"


async def test_update_enqueued_while_create_is_scheduled_is_parked_not_skipped(bench: Bench) -> None:
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "sequence": ["500", "500", "500"]}])
    await bench.enqueue("create", "p-1", {"TITLE": "first"})
    await bench.enqueue("update", "p-1", {"STAGE_ID": "WON"}, version=5)
    # the update arrives in the same read as the create, so it is coalesced; force a separate read:
    summary = await bench.run(batch_size=1)
    assert summary.outcomes == {"applied": 2}
    (deal,) = await bench.entities()
    assert deal["STAGE_ID"] == "WON"


async def test_older_version_is_skipped_as_stale_without_a_call(bench: Bench) -> None:
    await bench.enqueue("create", "v-1", {"TITLE": "v1"}, version=1)
    await bench.run()
    await bench.enqueue("update", "v-1", {"TITLE": "v9"}, version=9)
    await bench.run()
    await bench.enqueue("update", "v-1", {"TITLE": "v5"}, version=5)
    summary = await bench.run()
    assert summary.outcomes == {"skipped": 1}
    assert (await bench.outcomes())[-1]["reason"] == "stale"
    assert await bench.total_calls("crm.deal.update") == 1
    (deal,) = await bench.entities()
    assert deal["TITLE"] == "v9"


async def test_upsert_of_a_deal_deleted_in_bitrix24_creates_it_again(bench: Bench) -> None:
    await bench.enqueue("create", "u-1", {"TITLE": "one"})
    await bench.run()
    (deal,) = await bench.entities()
    await bench.admin.delete_entity("deal", int(deal["ID"]))
    await bench.enqueue("upsert", "u-1", {"TITLE": "two"})
    summary = await bench.run()
    assert summary.outcomes == {"applied": 1}
    assert await bench.total_calls("crm.deal.update") == 1  # answered "Not found"
    assert await bench.total_calls("crm.deal.add") == 2
    (again,) = await bench.entities()
    assert (again["TITLE"], again["ORIGIN_ID"]) == ("two", "u-1")


async def test_a_keys_later_operations_wait_with_its_dead_lettered_create_and_replay_in_order(
    bench: Bench,
) -> None:
    """They were acked `skipped:no_bitrix_id` and could never come back; now they follow their create into
    the dead-letter stream (class `dependency`) and a replay of the key's entries applies all of them."""
    from bitrix_worker.redis.deadletter import DeadLetters

    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "invalid"}])
    await bench.enqueue("create", "dep", {"TITLE": "v1"}, version=1)
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 1}
    for v in (2, 3):
        await bench.enqueue("update", "dep", {"TITLE": f"v{v}"}, version=v)
    await bench.enqueue("update", "never-created", {"TITLE": "x"})
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 2, "skipped": 1}  # a key that never had a create: skipped
    dead = await bench.dead()
    assert [(p["op"], e["class"]) for p, e in dead] == [
        ("create", "invalid_data"),
        ("update", "dependency"),
        ("update", "dependency"),
    ]
    assert "replay the create first" in dead[1][1]["reason"]
    assert await bench.total_calls("crm.deal.update") == 0  # waiting costs no call
    await bench.admin.set_faults(rules=[])  # the portal is fixed
    letters = DeadLetters(bench.redis, bench.settings.keys)
    chosen, _ = await letters.select(everything=True)
    await letters.replay(chosen, rate_per_s=0)
    summary = await bench.run()
    assert summary.outcomes == {"applied": 3}
    (deal,) = [d for d in await bench.entities() if d["ORIGIN_ID"] == "dep"]
    assert deal["TITLE"] == "v3"
    assert await bench.dead() == []
