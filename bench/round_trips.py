"""Client CPU of the Redis commands of one batch: the 9 round trips of 53dd657 beside today's 6.

    python -m bench.round_trips                 # 300 batches of 50 updates per variant, 5 rounds

Why: the round trips saved per batch are worth a few percent of the worker's CPU, below what
``bench.cost`` can see on a shared machine (±20% between windows). Here only the Redis side of a batch
runs, in one process, against the real Redis (``REDIS_URL``, keys under a unique prefix, deleted after),
timed by ``time.process_time`` and alternating the two variants round by round (the best round counts).

Both variants run today's scripts; *before* issues the same commands 53dd657 issued: the gate's state
(``HGETALL``) and the limiter's state as two calls, the claim, the fencing token (``INCR``), the method
pauses (``HMGET``), the limiter's slot, the sent mark, the operating time (``HSET``) and the settlement.
*after* reads the gate's and the limiter's state in one pipeline, takes the token in the claim and writes
the operating time with the settlement. The emulator and the mapping store are not involved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid

import redis.asyncio as aioredis

from bitrix_worker.defaults import StreamKeys
from bitrix_worker.redis.breaker import Breaker
from bitrix_worker.redis.leases import Leases
from bitrix_worker.redis.limits import Limiter, MethodPauses
from bitrix_worker.redis.streams import OperationQueue
from bitrix_worker.values import Settlement

BATCH = 50
METHOD = "batch"


def _payload(i: int) -> str:
    return json.dumps({"op": "update", "entity": "deal", "key": f"k{i}", "fields": {"TITLE": f"t{i}"}})


class Parts:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = StreamKeys(stream=f"{prefix}:ops", dead=f"{prefix}:dead")
        self.queue = OperationQueue(client, self.keys, group="g", consumer="c", segment_limit=BATCH)
        self.limiter = Limiter(client, f"{{{prefix}}}:limiter", rate_per_s=1e9, burst=10**6)
        self.breaker = Breaker(client, self.keys.breaker("p"), cooldown_s=30, max_cooldown_s=60)
        self.pauses = MethodPauses(client, self.keys.method_pause("p"), budget_s=480, safety=0.9)
        self.leases = Leases(client, self.keys, ttl_ms=10_000)
        self.batch = 0

    async def fill(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for i in range(BATCH):
                pipe.xadd(self.keys.stream, {"payload": _payload(self.batch * BATCH + i)})
            await pipe.execute()
        self.batch += 1

    async def one_batch(self, before: bool) -> None:
        if before:
            await self.breaker.state()
            await self.limiter.state()
        else:
            await self.breaker.state_with(self.limiter)
        entries, _ = await self.queue.claim(BATCH)
        assert len(entries) == BATCH, len(entries)
        ids = [e.id for e in entries]
        token = await self.leases.adopt(0 if before else self.queue.claimed_token(ids))
        assert token > 0
        await self.pauses.paused_for([METHOD])
        await self.limiter.reserve()
        await self.queue.mark_sent(ids)
        await self.pauses.observe(METHOD, 1.5, time.time() + 600)
        if before:
            await self.pauses.flush()
        also = (self.pauses.key, self.pauses.take_unwritten())
        settled = [Settlement(ids=[e.id], ident=e.ident, action="done") for e in entries]
        assert all(await self.queue.settle(settled, also=also))


async def run(batches: int, rounds: int) -> dict[str, float]:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = aioredis.Redis.from_url(url)
    prefix = f"bench-rt:{uuid.uuid4().hex[:10]}"
    parts = Parts(client, prefix)
    best: dict[str, float] = {}
    try:
        await parts.queue.ensure_group()
        for before in (True, False):  # warm-up: scripts loaded, connections open
            await parts.fill()
            await parts.one_batch(before)
        for rnd in range(rounds):
            for before in (True, False) if rnd % 2 == 0 else (False, True):
                cpu = 0.0
                for _ in range(batches):
                    await parts.fill()  # not timed
                    started = time.process_time()
                    await parts.one_batch(before)
                    cpu += time.process_time() - started
                name = "before" if before else "after"
                per_update_us = cpu / (batches * BATCH) * 1e6
                best[name] = min(best.get(name, float("inf")), per_update_us)
    finally:
        found = [k async for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
        if found:
            await client.delete(*found)
        await client.aclose()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.round_trips", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    best = asyncio.run(run(args.batches, args.rounds))
    print(f"client CPU of a batch's Redis commands, µs per update ({BATCH} a batch, best of {args.rounds}):")
    print(f"  before (9 round trips): {best['before']:.1f}")
    print(f"  after  (6 round trips): {best['after']:.1f}")
    print(f"  saved: {best['before'] - best['after']:.1f} µs per update")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
