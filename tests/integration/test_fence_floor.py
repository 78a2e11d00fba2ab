"""The fencing counter never hands a process a token below one it already took: a Redis Cluster failover
can lose a primary's last (unreplicated) increments, and the mapping store would refuse the lower tokens."""

from __future__ import annotations

import redis.asyncio as aioredis

from bitrix_worker.defaults import StreamKeys
from bitrix_worker.redis.leases import Leases


async def test_a_counter_that_went_back_is_moved_past_the_tokens_already_taken(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    keys = StreamKeys(stream=f"{key_prefix}:ops", dead=f"{key_prefix}:dead")
    leases = Leases(redis_client, keys, ttl_ms=1000)
    taken = [await leases.token() for _ in range(5)]
    assert taken == [1, 2, 3, 4, 5]
    await redis_client.set(keys.fence, 2)  # what a failover that lost the last increments leaves behind
    assert await leases.token() == 6
    other = Leases(redis_client, keys, ttl_ms=1000)  # another worker: knows no token yet
    assert await other.token() == 7  # still above: the counter itself moved past 5
