"""How many Redis round trips one batch costs on the hot path (issue 14: cost per operation).

A real Redis and the emulator; the worker's Redis client only records the commands it sends (a pipeline
counts as one round trip). One loop turn claims a batch of updates and delivers it; every command of that
turn and of the batch is listed, so a change that adds a round trip to every batch fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from harness import Bench

from bitrix_worker.mapping import MappingStore
from bitrix_worker.portals.clients import client_options, open_default_client
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


async def test_a_batch_of_updates_costs_six_round_trips(bench: Bench) -> None:
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
        "HMGET",  # method pauses
        "EVALSHA",  # the limiter books the request's slot
        "EVALSHA",  # mark sent, right before the request leaves
        "EVALSHA",  # settle, with the answers' operating times
    ], redis.sent
