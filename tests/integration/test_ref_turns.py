"""Cross-key turns on a real Redis: an operation that refers to another key ({"$ref": "entity:key"}) is handed
out only after every earlier operation of that key reached its final outcome (redis/lua/turns.lua)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from rich.console import Console

from bitrix_worker.dashboard import create_app
from bitrix_worker.defaults import StreamKeys
from bitrix_worker.keylookup import lookup
from bitrix_worker.lookup_view import lookup_view
from bitrix_worker.redis.deadletter import DeadLetters
from bitrix_worker.redis.gauges import QueueReader
from bitrix_worker.redis.streams import OperationQueue
from bitrix_worker.values import Entry, Settlement


@pytest.fixture
def keys(key_prefix: str) -> StreamKeys:
    return StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")


def op(kind: str, ident: str, *refs: str, products: list[Any] | None = None, **fields: Any) -> str:
    """A payload of ``ident`` whose fields refer to each of ``refs``."""
    entity, key = ident.split(":", 1)
    body: dict[str, Any] = {
        "op": kind,
        "entity": entity,
        "key": key,
        "fields": {**fields, **{f"REF_{i}": {"$ref": r} for i, r in enumerate(refs)}},
    }
    if products is not None:
        body["products"] = products
    return json.dumps(body)


async def make_queue(client: aioredis.Redis, keys: StreamKeys, consumer: str = "c1") -> OperationQueue:
    q = OperationQueue(client, keys, group="g", consumer=consumer, outcomes_maxlen=1000)
    await q.ensure_group()
    return q


async def add(client: aioredis.Redis, keys: StreamKeys, *payloads: str) -> list[str]:
    return [(await client.xadd(keys.stream, {"payload": p})).decode() for p in payloads]


def members(e: Entry) -> list[tuple[str, str]]:
    """(origin stream id, payload) of each operation an entry carries."""
    if e.whose == "unit":
        unit = json.loads(e.fields["unit"])
        return [(m["origin"], m["payload"]) for m in unit["members"]]
    return [(e.id, (e.payload or b"").decode())]


def origins(entries: list[Entry]) -> list[str]:
    return [o for e in entries for o, _ in members(e)]


def units(entries: list[Entry]) -> list[list[Entry]]:
    """The units of work a claim (or reclaim) gave: one per key, as the worker groups them."""
    by_ident: dict[str, list[Entry]] = {}
    for e in entries:
        by_ident.setdefault(e.ident, []).append(e)
    return list(by_ident.values())


def settlement(unit: list[Entry], action: str, delay_ms: int = 0) -> Settlement:
    ids, ident = [e.id for e in unit], unit[0].ident
    if action != "retry":
        dead = (
            [["payload", p, "error", "{}"] for e in unit for _, p in members(e)] if action == "dead" else []
        )
        return Settlement(ids=ids, ident=ident, action=action, dead=dead)  # type: ignore[arg-type]
    ms = [{"origin": o, "payload": p} for e in unit for o, p in members(e)]
    body = json.dumps({"ident": ident, "members": ms, "failures": 1, "bounces": 0})
    return Settlement(ids, ident, "retry", delay_ms=delay_ms, origin=ms[0]["origin"], unit=body)


async def finish(q: OperationQueue, entries: list[Entry], action: str = "done", delay_ms: int = 0) -> None:
    assert await q.settle([settlement(u, action, delay_ms) for u in units(entries)]) == [True] * len(
        units(entries)
    )


async def assert_empty(client: aioredis.Redis, keys: StreamKeys) -> None:
    assert await QueueReader(client, keys, "g").is_idle()
    assert await client.hlen(keys.holds) == 0
    assert await client.hgetall(keys.parked) == {}


async def test_ref_waits_for_the_earlier_op_of_its_target_then_goes(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q, other = await make_queue(redis_client, keys), await make_queue(redis_client, keys, "c2")
    contact, deal = await add(
        redis_client, keys, op("create", "contact:c"), op("create", "deal:d", "contact:c")
    )
    first, _ = await q.claim(10)
    assert origins(first) == [contact]
    assert (await other.claim(10))[0] == []  # another consumer does not get the waiting deal either
    assert await redis_client.xlen(keys.stream) == 1  # the waiting deal left the stream
    await finish(q, first)
    (nxt,), _ = await other.claim(10)
    assert (nxt.ident, nxt.whose, origins([nxt])) == ("deal:d", "unit", [deal])
    assert json.loads(members(nxt)[0][1])["fields"]["REF_0"] == {"$ref": "contact:c"}
    await finish(other, [nxt])
    await assert_empty(redis_client, keys)


async def test_ref_to_an_idle_key_is_taken_at_once(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    q = await make_queue(redis_client, keys)
    (deal,) = await add(redis_client, keys, op("create", "deal:d", "contact:nobody"))
    owned, _ = await q.claim(10)
    assert [(e.id, e.whose) for e in owned] == [(deal, "")]  # the producer's own entry, no detour
    await finish(q, owned)
    await assert_empty(redis_client, keys)


async def test_a_scheduled_retry_is_not_final(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    q = await make_queue(redis_client, keys)
    contact, deal = await add(
        redis_client, keys, op("create", "contact:c"), op("update", "deal:d", "contact:c")
    )
    first, _ = await q.claim(10)
    await finish(q, first, "retry", delay_ms=30)
    await asyncio.sleep(0.05)
    assert await q.promote_due() == 1
    again, _ = await q.claim(10)
    assert origins(again) == [contact]  # the retry, and still not the deal
    await finish(q, again)
    assert origins((await q.claim(10))[0]) == [deal]


async def test_a_dead_lettered_target_releases_the_waiter(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    _, deal = await add(redis_client, keys, op("create", "contact:c"), op("update", "deal:d", "contact:c"))
    first, _ = await q.claim(10)
    await finish(q, first, "dead")
    owned, _ = await q.claim(10)
    assert origins(owned) == [deal]
    await finish(q, owned)
    await assert_empty(redis_client, keys)


async def test_later_ops_of_the_referring_key_wait_behind_it(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    contact, create, update = await add(
        redis_client,
        keys,
        op("create", "contact:c"),
        op("create", "deal:d", "contact:c"),
        op("update", "deal:d", TITLE="later"),
    )
    first, _ = await q.claim(10)
    assert origins(first) == [contact]  # the update neither joins the waiting create nor passes it
    await finish(q, first)
    second, _ = await q.claim(10)
    assert origins(second) == [create]  # alone: an operation with refs never coalesces
    await finish(q, second)
    third, _ = await q.claim(10)
    assert origins(third) == [update]
    await finish(q, third)
    await assert_empty(redis_client, keys)


async def test_later_ops_of_the_target_do_not_wait_for_the_referrer(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    c1, deal, c2 = await add(
        redis_client,
        keys,
        op("create", "contact:c"),
        op("update", "deal:d", "contact:c"),
        op("delete", "contact:c"),
    )
    first, _ = await q.claim(10)
    assert origins(first) == [c1]  # the delete is parked behind the create
    await finish(q, first)
    both, _ = await q.claim(10)
    assert sorted(origins(both)) == sorted([deal, c2])  # side by side: the delete came after the deal
    await finish(q, both)
    await assert_empty(redis_client, keys)


async def test_a_chain_of_refs_goes_in_order(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    q = await make_queue(redis_client, keys)
    company, contact, deal = await add(
        redis_client,
        keys,
        op("create", "company:m"),
        op("create", "contact:c", "company:m"),
        op("create", "deal:d", "contact:c"),
    )
    for expected in (company, contact, deal):
        owned, _ = await q.claim(10)
        assert origins(owned) == [expected]
        await finish(q, owned)
    await assert_empty(redis_client, keys)


async def test_two_refs_wait_for_both_including_products(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    contact, company, deal = await add(
        redis_client,
        keys,
        op("create", "contact:c"),
        op("create", "company:m"),
        op("create", "deal:d", "contact:c", products=[{"PRODUCT_ID": {"$ref": "product:p"}},
                                                       {"X": [{"deep": {"$ref": "company:m"}}]}]),
    )  # fmt: skip
    first, _ = await q.claim(10)
    assert sorted(origins(first)) == sorted([contact, company])
    (c_unit,) = [u for u in units(first) if u[0].ident == "contact:c"]
    (m_unit,) = [u for u in units(first) if u[0].ident == "company:m"]
    await finish(q, c_unit)
    assert (await q.claim(10))[0] == []  # the company's create (a product row's ref) is still out
    assert int(await redis_client.hget(keys.parked, "n|waits") or 0) == 1
    await finish(q, m_unit)
    owned, _ = await q.claim(10)
    assert origins(owned) == [deal]
    await finish(q, owned)
    await assert_empty(redis_client, keys)


async def test_self_refs_and_malformed_refs_are_ignored(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    await add(redis_client, keys, op("create", "contact:c"))
    held, _ = await q.claim(10)
    fields = {"A": {"$ref": "deal:d"}, "B": {"$ref": 5}, "C": {"$ref": "contact:c", "x": 1},
              "D": {"$ref": "nocolon"}, "E": {"$ref": ":c"}}  # fmt: skip
    (deal,) = await add(redis_client, keys, op("update", "deal:d", **fields))
    owned, _ = await q.claim(10)
    assert origins(owned) == [deal]  # contact:c is held, but no well-formed ref names it
    await finish(q, owned + held)
    await assert_empty(redis_client, keys)


async def test_ops_with_refs_never_coalesce(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    q = await make_queue(redis_client, keys)
    a, b, c = await add(
        redis_client,
        keys,
        op("create", "deal:d"),
        op("update", "deal:d", "contact:idle"),
        op("update", "deal:d"),
    )
    for expected in (a, b, c):
        owned, _ = await q.claim(10)
        assert origins(owned) == [expected]
        await finish(q, owned)
    await assert_empty(redis_client, keys)


async def test_a_dead_consumers_entries_are_reclaimed_and_the_waiter_follows(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    dying, rescuer = await make_queue(redis_client, keys, "dying"), await make_queue(redis_client, keys, "r")
    contact, deal = await add(
        redis_client, keys, op("create", "contact:c"), op("create", "deal:d", "contact:c")
    )
    assert origins((await dying.claim(10))[0]) == [contact]
    assert (await rescuer.claim(10))[0] == []
    await asyncio.sleep(0.03)
    taken, _ = await rescuer.reclaim(min_idle_ms=20, count=10)
    assert origins(taken) == [contact]
    assert (await rescuer.claim(10))[0] == []  # reclaiming is not an outcome
    await finish(rescuer, taken)
    owned, _ = await rescuer.claim(10)
    assert origins(owned) == [deal]
    await finish(rescuer, owned)
    await assert_empty(redis_client, keys)


async def test_replayed_dead_letters_take_part_in_the_turns(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    dead = DeadLetters(redis_client, keys)
    await add(redis_client, keys, op("create", "contact:c"))
    await finish(q, (await q.claim(10))[0], "dead")
    (entry,) = await dead.entries()
    report = await dead.replay([entry], rate_per_s=0)
    ((_, replayed),) = report.replayed
    (deal,) = await add(redis_client, keys, op("create", "deal:d", "contact:c"))
    first, _ = await q.claim(10)
    assert origins(first) == [replayed]  # the replay entered before the deal: the deal waits for it
    await finish(q, first, "dead")
    owned, _ = await q.claim(10)
    assert origins(owned) == [deal]
    await finish(q, owned, "dead")
    # the referrer itself replayed: it waits again for whatever of its target entered before it
    (c2,) = await add(redis_client, keys, op("update", "contact:c"))
    held, _ = await q.claim(10)
    assert origins(held) == [c2]
    (deal_dead,) = [e for e in await dead.entries() if b"deal" in e.payload.encode()]
    ((_, deal_again),) = (await dead.replay([deal_dead], rate_per_s=0)).replayed
    assert (await q.claim(10))[0] == []
    await finish(q, held)
    assert origins((await q.claim(10))[0]) == [deal_again]


async def test_status_and_lookup_show_what_waits_for_a_reference(bench: Any) -> None:
    s = bench.settings
    q = OperationQueue(bench.redis, s.keys, group=s.group, consumer="c1")
    await q.ensure_group()
    contact, create, update = await add(
        bench.redis,
        s.keys,
        op("create", "contact:cust-7"),
        op("create", "deal:order-7", "contact:cust-7"),
        op("update", "deal:order-7", TITLE="later"),
    )
    held, _ = await q.claim(10)
    assert (await QueueReader(bench.redis, s.keys, s.group).gauges()).waiting_for_refs == 1
    report = await lookup(bench.redis, s, "deal", "order-7")
    assert [(w.where, w.stream_id, w.op, w.waits_for) for w in report.waiting] == [
        ("waiting", create, "create", ["contact:cust-7"]),
        ("parked", update, "update", []),
    ]
    console = Console(record=True, width=200)
    console.print(lookup_view(report))
    assert "waiting for contact:cust-7" in console.export_text()
    target = await lookup(bench.redis, s, "contact", "cust-7")
    assert [(w.where, w.stream_id) for w in target.waiting] == [("pending", contact)]
    assert target.waited_by == [f"deal:order-7 {create}"]
    transport = httpx.ASGITransport(app=create_app(s, redis=bench.redis))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
        assert "waiting for contact:cust-7" in (await web.get("/find?q=deal:order-7")).text
        page = (await web.get("/find?q=contact:cust-7")).text
        assert f"waiting for this key's: deal:order-7 {create}" in page
    await finish(q, held)
    assert (await QueueReader(bench.redis, s.keys, s.group).gauges()).waiting_for_refs == 0
    report = await lookup(bench.redis, s, "deal", "order-7")
    assert [(w.where, w.stream_id, w.waits_for) for w in report.waiting] == [
        ("stream", create, []),
        ("parked", update, []),
    ]


@pytest.mark.parametrize("target_first", [False, True])
async def test_a_parked_referrer_gets_its_keys_turn_and_its_reference_in_either_order(
    redis_client: aioredis.Redis, keys: StreamKeys, target_first: bool
) -> None:
    """The referrer is parked behind its own key's create while the referenced key is busy too: whichever
    finishes first, it goes only when both have, and alone."""
    q = await make_queue(redis_client, keys)
    deal, contact, ref, follow = await add(
        redis_client,
        keys,
        op("create", "deal:d"),
        op("create", "contact:c"),
        op("update", "deal:d", "contact:c"),
        op("update", "deal:d", TITLE="after"),
    )
    first, _ = await q.claim(10)
    by_ident = {u[0].ident: u for u in units(first)}
    assert sorted(origins(first)) == sorted([deal, contact])
    await finish(q, by_ident["contact:c" if target_first else "deal:d"])
    if target_first:
        assert (await q.claim(10))[0] == []  # its reference is final, its own key is still held
    else:
        assert (await q.claim(10))[0] == []  # its own key's turn came; it holds it and waits
        assert await redis_client.hexists(keys.parked, "x|deal:d")
    await finish(q, by_ident["deal:d" if target_first else "contact:c"])
    for expected in (ref, follow):
        owned, _ = await q.claim(10)
        assert origins(owned) == [expected]
        await finish(q, owned)
    await assert_empty(redis_client, keys)


async def test_odd_shapes_around_refs_do_not_break_the_claim(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    await add(redis_client, keys, op("create", "contact:c"))
    held, _ = await q.claim(10)
    odd = [
        json.dumps(
            {"op": "update", "entity": "deal", "key": "x1", "fields": [1, None, "a"], "products": "rows"}
        ),
        json.dumps({"op": "update", "entity": "deal", "key": "x2", "fields": None, "products": [None, 3]}),
        json.dumps(
            {"op": "update", "entity": "deal", "key": "x3", "fields": {"A": {"$ref": "contact:\udcff"}}}
        ),
        json.dumps(
            {"op": "update", "entity": "deal", "key": "x4", "fields": {"A": {"$ref": "x" * 2000 + ":k"}}}
        ),
    ]
    ids = await add(redis_client, keys, *odd)
    owned, _ = await q.claim(10)
    assert origins(owned) == ids  # nothing here names the busy contact: all taken at once
    nested = json.dumps(
        {"op": "update", "entity": "deal", "key": "x5", "fields": {"A": {"$ref": {"$ref": "contact:c"}}}}
    )
    (waits,) = await add(redis_client, keys, nested)
    assert (await q.claim(10))[0] == []  # an inner ref still counts (the worker dead-letters the shape)
    await finish(q, owned + held)
    assert origins((await q.claim(10))[0]) == [waits]
