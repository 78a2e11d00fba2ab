"""Property of the cross-key turns on a real Redis, through the queue API: random streams of operations over
a few keys with random refs, several consumers claiming and settling (done / retry / dead-letter) in a
random interleaving, consumers dying and their entries reclaimed, dead letters replayed.

At every hand-out (claim or reclaim) each operation's earlier operations of its own key (outside its unit)
and of every key it refers to must be final; in the end every operation is final, nothing is lost, and the
holds and parked hashes are empty. Seeded, so a failure names the seed that reproduces it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aioredis
from test_ref_turns import make_queue, members, op, settlement, units

from bitrix_worker.defaults import StreamKeys
from bitrix_worker.redis.deadletter import DeadLetters
from bitrix_worker.redis.gauges import QueueReader
from bitrix_worker.redis.streams import OperationQueue
from bitrix_worker.values import Entry

IDENTS = ("deal:a", "deal:b", "contact:c", "company:d")
KINDS = ("create", "update", "update", "upsert", "delete")


def order(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


@dataclass
class Op:
    ident: str
    refs: tuple[str, ...]
    final: bool = False
    retries: int = 0


@dataclass
class Consumer:
    queue: OperationQueue
    inflight: list[list[Entry]] = field(default_factory=list)


@dataclass
class World:
    rng: random.Random
    client: aioredis.Redis
    keys: StreamKeys
    ops: dict[str, Op] = field(default_factory=dict)  # by the stream id it entered with
    consumers: list[Consumer] = field(default_factory=list)
    hand_outs: int = 0
    waiting_seen: int = 0  # the most operations seen waiting for a ref at once
    dead_letters: int = 0

    def random_payload(self) -> tuple[str, str, tuple[str, ...]]:
        ident = self.rng.choice(IDENTS)
        refs = tuple(
            sorted({r for r in self.rng.sample(IDENTS, self.rng.choice((0, 0, 1, 1, 2))) if r != ident})
        )
        extra: dict[str, object] = {}
        if self.rng.random() < 0.2:
            extra["SELF"] = {"$ref": ident}  # ignored by the turns
        if self.rng.random() < 0.1:
            extra["BAD"] = {"$ref": "no colon"}
        return op(self.rng.choice(KINDS), ident, *refs, **extra), ident, refs

    async def add(self) -> None:
        payload, ident, refs = self.random_payload()
        new_id = (await self.client.xadd(self.keys.stream, {"payload": payload})).decode()
        self.ops[new_id] = Op(ident, refs)

    def check_hand_out(self, unit: list[Entry]) -> None:
        """Every earlier operation of the unit's key (outside the unit) and of each key a member refers to
        is final."""
        inside = {o for e in unit for o, _ in members(e)}
        for origin in inside:
            mine = self.ops[origin]
            assert not mine.final, f"{origin} handed out after its final outcome"
            for other_id, other in self.ops.items():
                if other.final or other_id in inside or order(other_id) >= order(origin):
                    continue
                assert other.ident != mine.ident, f"{origin} handed out before {other_id} of its key"
                assert other.ident not in mine.refs, f"{origin} handed out before {other_id} it refers to"
        self.hand_outs += 1

    async def claim(self, c: Consumer) -> None:
        owned, _ = await c.queue.claim(self.rng.randint(1, 6))
        for unit in units(owned):
            self.check_hand_out(unit)
            c.inflight.append(unit)
        waiting = int(await self.client.hget(self.keys.parked, "n|waits") or 0)
        self.waiting_seen = max(self.waiting_seen, waiting)

    async def settle(self, c: Consumer) -> None:
        unit = c.inflight.pop(self.rng.randrange(len(c.inflight)))
        inside = [self.ops[o] for e in unit for o, _ in members(e)]
        roll = self.rng.random()
        action = "done" if roll < 0.6 else "dead" if roll < 0.75 else "retry"
        if action == "retry" and max(o.retries for o in inside) >= 3:
            action = "done"
        (ok,) = await c.queue.settle([settlement(unit, action, delay_ms=self.rng.choice((0, 1, 5)))])
        if not ok:
            return  # reclaimed by another consumer meanwhile: the outcome is theirs
        self.dead_letters += len(inside) if action == "dead" else 0
        for o in inside:
            o.final = action != "retry"
            o.retries += action == "retry"

    async def reclaim(self, c: Consumer) -> None:
        taken, _ = await c.queue.reclaim(min_idle_ms=0, count=50)
        for unit in units(taken):
            self.check_hand_out(unit)
            c.inflight.append(unit)

    async def replay(self, dead: DeadLetters) -> None:
        entries = await dead.entries()
        if not entries:
            return
        entry = self.rng.choice(entries)
        ((_, new_id),) = (await dead.replay([entry], rate_per_s=0)).replayed
        self.dead_letters -= 1
        payload = json.loads(entry.payload)
        ident = f"{payload['entity']}:{payload['key']}"
        refs = {v["$ref"] for v in payload["fields"].values() if isinstance(v, dict) and "$ref" in v}
        self.ops[new_id] = Op(ident, tuple(sorted(r for r in refs if r in IDENTS and r != ident)))


async def run_world(client: aioredis.Redis, keys: StreamKeys, seed: int, total: int) -> World:
    rng = random.Random(seed)
    w = World(rng, client, keys)
    dead = DeadLetters(client, keys)
    w.consumers = [Consumer(await make_queue(client, keys, f"c{i}")) for i in range(3)]
    replays, born = 0, 3
    for _step in range(20_000):
        if len(w.ops) < total and rng.random() < 0.3:
            for _ in range(rng.randint(1, 3)):
                await w.add()
        c = rng.choice(w.consumers)
        roll = rng.random()
        if roll < 0.4:
            await w.claim(c)
        elif roll < 0.8 and c.inflight:
            await w.settle(c)
        elif roll < 0.9:
            await c.queue.promote_due()
        elif roll < 0.93:  # this consumer dies; a new one starts, and somebody reclaims its entries
            w.consumers.remove(c)
            w.consumers.append(Consumer(await make_queue(client, keys, f"c{born}")))
            born += 1
        elif roll < 0.96:
            await w.reclaim(c)
        elif replays < 5 and rng.random() < 0.3:
            await w.replay(dead)
            replays += 1
        if len(w.ops) >= total and all(o.final for o in w.ops.values()):
            break
        if _step % 500 == 499 and not any(c.inflight for c in w.consumers):
            await w.reclaim(w.consumers[0])  # what a dead consumer left behind
    return w


@pytest.mark.parametrize("seed", range(8))
async def test_random_streams_keep_cross_key_turns(
    redis_client: aioredis.Redis, key_prefix: str, seed: int
) -> None:
    keys = StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")
    w = await run_world(redis_client, keys, seed, total=60)
    unfinished = [i for i, o in w.ops.items() if not o.final]
    assert unfinished == [], f"seed {seed}: never final: {unfinished}"
    assert await QueueReader(redis_client, keys, "g").is_idle()
    assert await redis_client.xlen(keys.stream) == 0
    assert await redis_client.hlen(keys.holds) == 0
    assert await redis_client.hgetall(keys.parked) == {}
    assert await redis_client.zcard(keys.schedule) == 0
    assert w.hand_outs >= len(w.ops)
    assert await redis_client.xlen(keys.dead) == w.dead_letters  # nothing lost
    assert w.waiting_seen > 0  # the run did make operations wait for a ref
