"""The Lua scripts on a real Redis: per-key turns, parking, handoff, coalescing, schedule, reclaim."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from bitrix_worker.defaults import StreamKeys
from bitrix_worker.redis.gauges import QueueReader
from bitrix_worker.redis.streams import OperationQueue
from bitrix_worker.values import Entry, Settlement


async def parked_count(client: aioredis.Redis, keys: StreamKeys, ident: str) -> int:
    head, tail = await client.hmget(keys.parked, [f"h|{ident}", f"t|{ident}"])
    return int(tail or 0) - int(head or 0)


def payload(op: str, key: str, **fields: object) -> str:
    return json.dumps({"op": op, "entity": "deal", "key": key, "fields": fields})


@pytest.fixture
def keys(key_prefix: str) -> StreamKeys:
    return StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")


async def make_queue(client: aioredis.Redis, keys: StreamKeys, consumer: str = "c1") -> OperationQueue:
    q = OperationQueue(client, keys, group="g", consumer=consumer, outcomes_maxlen=1000)
    await q.ensure_group()
    return q


async def add(client: aioredis.Redis, keys: StreamKeys, *payloads: str) -> list[str]:
    return [(await client.xadd(keys.stream, {"payload": p})).decode() for p in payloads]


def done(entries: list[Entry]) -> list[Settlement]:
    by_ident: dict[str, list[str]] = {}
    for e in entries:
        by_ident.setdefault(e.ident, []).append(e.id)
    return [Settlement(ids=ids, ident=ident, action="done") for ident, ids in by_ident.items()]


async def test_updates_of_one_key_coalesce_and_later_ops_park(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    await add(
        redis_client,
        keys,
        payload("create", "a"),
        payload("update", "a", X=1),
        payload("update", "b"),
        payload("delete", "a"),
        payload("update", "a", X=2),
    )
    owned, _ = await q.claim(100)
    assert [(e.ident, json.loads(e.payload or b"")["op"]) for e in owned] == [
        ("deal:a", "create"),
        ("deal:a", "update"),
        ("deal:b", "update"),
    ]
    assert await parked_count(redis_client, keys, "deal:a") == 2
    assert await redis_client.xlen(keys.stream) == 3  # parked entries left the stream
    # finishing a's unit hands its turn to the next segment: the delete alone
    assert await q.settle(done(owned)) == [True, True]
    nxt, _ = await q.claim(100)
    assert len(nxt) == 1
    unit = json.loads(nxt[0].fields["unit"])
    assert [json.loads(m["payload"])["op"] for m in unit["members"]] == ["delete"]
    await q.settle(done(nxt))
    last, _ = await q.claim(100)
    unit = json.loads(last[0].fields["unit"])
    assert [json.loads(m["payload"])["fields"] for m in unit["members"]] == [{"X": 2}]
    await q.settle(done(last))
    assert await QueueReader(redis_client, keys, "g").is_idle()


async def test_new_entry_waits_behind_a_scheduled_retry(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    await add(redis_client, keys, payload("create", "k"))
    (first,), _ = await q.claim(10)
    unit = json.dumps(
        {"ident": "deal:k", "members": [{"origin": first.id, "payload": payload("create", "k")}]}
    )
    retry = Settlement(
        ids=[first.id], ident="deal:k", action="retry", delay_ms=50, origin=first.id, unit=unit
    )
    assert await q.settle([retry]) == [True]
    await add(redis_client, keys, payload("update", "k", A=1))
    assert (await q.claim(10))[0] == []  # parked behind the retry
    await asyncio.sleep(0.08)
    assert await q.promote_due() == 1
    (again,), _ = await q.claim(10)
    assert again.fields["held"] == b"1"
    await q.settle(done([again]))
    (follow,), _ = await q.claim(10)
    assert json.loads(json.loads(follow.fields["unit"])["members"][0]["payload"])["op"] == "update"


async def test_dead_letter_and_outcomes_are_atomic_with_ack(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q = await make_queue(redis_client, keys)
    await add(redis_client, keys, payload("update", "z"))
    (e,), _ = await q.claim(10)
    s = Settlement(
        ids=[e.id],
        ident=e.ident,
        action="dead",
        dead=[["payload", payload("update", "z"), "error", "{}"]],
        outcomes=[["stream_id", e.id, "outcome", "dead_lettered"]],
        counters={"outcome:dead_lettered": 1},
    )
    assert await q.settle([s]) == [True]
    assert await redis_client.xlen(keys.dead) == 1
    assert await redis_client.xlen(keys.outcomes) == 1
    assert await redis_client.hget(keys.counters, "outcome:dead_lettered") == b"1"
    pending = await redis_client.xpending(keys.stream, "g")
    assert pending["pending"] == 0
    assert await QueueReader(redis_client, keys, "g").is_idle()


async def test_settle_refuses_an_entry_reclaimed_by_another_consumer(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    q1 = await make_queue(redis_client, keys, "c1")
    q2 = await make_queue(redis_client, keys, "c2")
    await add(redis_client, keys, payload("create", "r"))
    (e,), _ = await q1.claim(10)
    await asyncio.sleep(0.02)
    reclaimed, _ = await q2.reclaim(min_idle_ms=10, count=10)
    assert [x.id for x in reclaimed] == [e.id]
    assert reclaimed[0].deliveries == 2
    assert await q1.settle(done([e])) == [False]  # the zombie cannot finish it
    assert await q2.settle(done([reclaimed[0]])) == [True]


async def test_blocking_wait_wakes_on_new_entry(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    q = await make_queue(redis_client, keys)
    owned, last = await q.claim(10)
    assert owned == []

    async def later() -> None:
        await asyncio.sleep(0.05)
        await add(redis_client, keys, payload("update", "w"))

    task = asyncio.create_task(later())
    loop = asyncio.get_running_loop()
    started = loop.time()
    await q.wait_for_new(last, block_ms=2000)
    assert loop.time() - started < 1.0
    await task
    assert len((await q.claim(10))[0]) == 1


async def test_malformed_entry_is_owned_without_a_key(redis_client: aioredis.Redis, keys: StreamKeys) -> None:
    q = await make_queue(redis_client, keys)
    await redis_client.xadd(keys.stream, {"payload": b"\xff not json"})
    await redis_client.xadd(keys.stream, {"other": "x"})
    owned, _ = await q.claim(10)
    assert [e.ident for e in owned] == ["", ""]
    await q.dead_letter_raw(owned[0], "not JSON")
    dead = await redis_client.xrange(keys.dead)
    assert dead[0][1][b"payload"] == b"\xff not json"


async def test_parked_lists_of_an_older_version_move_into_the_parked_hash_in_order(
    redis_client: aioredis.Redis, keys: StreamKeys
) -> None:
    """Before 0.2 each key's parked operations were a list of their own (a key no script declared); a
    worker starting on such a stream moves them in front of anything parked since, keeping stream order."""
    q = await make_queue(redis_client, keys)
    await add(redis_client, keys, payload("create", "m"))
    (first,), _ = await q.claim(10)  # deal:m is now held
    old = [json.dumps({"id": f"1-{i}", "op": "update", "f": ["payload", payload("update", "m", N=i)]})
           for i in range(2)]  # fmt: skip
    await redis_client.rpush(keys.legacy_parked("deal:m"), *old)
    await add(redis_client, keys, payload("update", "m", N=2))
    assert (await q.claim(10))[0] == []  # parked behind the held create, after the old list
    await q.ensure_group()
    assert not await redis_client.exists(keys.legacy_parked("deal:m"))
    assert await parked_count(redis_client, keys, "deal:m") == 3
    await q.settle(done([first]))
    (nxt,), _ = await q.claim(10)
    unit = json.loads(nxt.fields["unit"])
    assert [json.loads(m["payload"])["fields"]["N"] for m in unit["members"]] == [0, 1, 2]
    await q.settle(done([nxt]))
    assert await redis_client.hlen(keys.parked) == 0  # an emptied queue leaves nothing behind
