"""How many Redis round trips one batch costs on the hot path (issue 14: cost per operation).

A real Redis and the emulator; the worker's Redis client only records the commands it sends (a pipeline
counts as one round trip). One loop turn claims a batch of updates and delivers it; every command of that
turn and of the batch is listed, so a change that adds a round trip to every batch fails here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis.asyncio as aioredis
from harness import Bench
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from bitrix_worker.defaults import StreamKeys
from bitrix_worker.mapping import MappingStore
from bitrix_worker.portals.clients import client_options, open_default_client
from bitrix_worker.redis.breaker import Breaker
from bitrix_worker.redis.leases import Leases
from bitrix_worker.redis.limits import Limiter
from bitrix_worker.redis.streams import OperationQueue
from bitrix_worker.values import Settlement
from bitrix_worker.worker import Worker

pytestmark = pytest.mark.asyncio


class RecordingRedis(aioredis.Redis):
    """A real client that notes each command's name (and, for scripts, nothing more: their SHA varies)."""

    sent: list[str]

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.sent.append(str(args[0]).upper())
        return await super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        self.sent.append("PIPELINE")
        return super().pipeline(transaction, shard_hint)


async def _one_turn(worker: Worker) -> None:
    assert await worker._step(until_idle=False)
    await worker._batches.drain(10.0)


async def test_a_batch_of_updates_costs_five_round_trips(bench: Bench) -> None:
    n = 20
    for i in range(n):
        await bench.enqueue("create", f"k{i}", {"TITLE": f"deal {i}"})
    await bench.run()  # the deals exist and are mapped
    settings = bench.settings
    redis = RecordingRedis.from_url(settings.redis_url)
    redis.sent = []
    store = await MappingStore.connect(settings.database_url)
    try:
        async with open_default_client(settings, redis, **client_options(settings)) as client:
            worker = Worker(settings, redis=redis, client=client, store=store)
            await worker.queue.ensure_group()
            await bench.enqueue("update", "k0", {"TITLE": "warm-up"})  # loads the scripts
            await _one_turn(worker)
            for i in range(n):
                await bench.enqueue("update", f"k{i}", {"TITLE": f"deal {i} again"})
            redis.sent.clear()
            await _one_turn(worker)
            summary = worker.summary
    finally:
        await store.close()
        await redis.aclose()
    assert summary.outcomes["applied"] >= n
    # the portal's health record is written at most once a second: not part of every batch
    sent = [c for c in redis.sent if c != "HSET"]
    assert sent == [
        "PIPELINE",  # the portal gate's state and the limiter's (claim no further ahead than it sends)
        "EVALSHA",  # claim, with the batch's fencing token
        "PIPELINE",  # method pauses, and the limiter books the request's slot
        "EVALSHA",  # mark sent, right before the request leaves
        "EVALSHA",  # settle, with the answers' operating times
    ], redis.sent


def update(key: str) -> str:
    return json.dumps({"op": "update", "entity": "deal", "key": key, "fields": {"TITLE": key}})


@pytest.mark.parametrize("same_slot", [True, False])
async def test_the_settlement_writes_the_operating_times_in_either_slot(
    redis_client: aioredis.Redis, key_prefix: str, same_slot: bool
) -> None:
    """In the stream's slot the settle script sets the fields; elsewhere (a Cluster would refuse the script)
    an HSET after it does. Either way they land, and the settlement itself is unchanged."""
    keys = StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")
    q = OperationQueue(redis_client, keys, group="g", consumer="c1")
    await q.ensure_group()
    await redis_client.xadd(keys.stream, {"payload": update("a")})
    (entry,), _ = await q.claim(10)
    pauses = keys.method_pause("p") if same_slot else f"{key_prefix}:elsewhere"
    assert (key_slot(pauses.encode()) == key_slot(keys.stream.encode())) is same_slot
    fields = {"operating:crm.deal.update": "[1.5, 1700000000.0]"}
    done = [Settlement(ids=[entry.id], ident=entry.ident, action="done")]
    assert await q.settle(done, also=(pauses, fields)) == [True]
    assert await redis_client.hgetall(pauses) == {b"operating:crm.deal.update": b"[1.5, 1700000000.0]"}
    assert await redis_client.xlen(keys.stream) == 0


async def test_a_claimed_token_serves_its_own_batch_and_never_one_below_the_highest(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")
    q = OperationQueue(redis_client, keys, group="g", consumer="c1")
    await q.ensure_group()
    leases = Leases(redis_client, keys, ttl_ms=10_000)
    for key in ("a", "b"):
        await redis_client.xadd(keys.stream, {"payload": update(key)})
    entries, _ = await q.claim(1)
    later, _ = await q.claim(1)
    first = q.claimed_token([e.id for e in entries])
    second = q.claimed_token([e.id for e in later])
    assert 0 < first < second == int(await redis_client.get(keys.fence))
    assert q.claimed_token([entries[0].id, later[0].id]) == 0  # not one claim's entries: take a new token
    assert q.claimed_token([]) == 0
    assert await leases.adopt(second) == second
    fresh = await leases.adopt(first)  # below what this process already took: a new one instead
    assert fresh > second
    assert (await q.claim(1))[0] == []  # an empty claim takes no token
    assert int(await redis_client.get(keys.fence)) == fresh


async def test_the_gate_and_the_limiter_read_together_as_apart(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    limiter = Limiter(redis_client, f"{{{key_prefix}}}:limiter", rate_per_s=2, burst=1)
    breaker = Breaker(redis_client, f"{key_prefix}:breaker", cooldown_s=30, max_cooldown_s=60)
    await limiter.reserve()
    await limiter.reserve()  # booked ahead: the next request may go in about half a second
    await breaker.trip("server_error: 503")
    gate, bucket = await breaker.state_with(limiter)
    assert gate == await breaker.state()
    assert gate.open
    assert 0.3 < bucket.next_free_s <= (await limiter.state()).next_free_s + 0.05
    # a script Redis does not know (NOSCRIPT in the pipeline) is run the ordinary way instead
    assert (await limiter.state_from(NoScriptError("NOSCRIPT"))).next_free_s > 0.3
