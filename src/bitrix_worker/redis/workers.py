"""Which worker processes are alive: each writes a heartbeat (its consumer name -> Redis server ms) to one
hash per stream; ``status`` reads it, and a worker that stops cleanly removes its own line."""

from __future__ import annotations

from ..values import as_text
from .connection import RedisClient
from .errors import translated


class WorkerRegistry:
    def __init__(self, client: RedisClient, key: str) -> None:
        self._client = client
        self._key = key

    async def beat(self, consumer: str, at_ms: int) -> None:
        with translated("heartbeat"):
            await self._client.hset(self._key, consumer, at_ms)

    async def leave(self, consumer: str) -> None:
        with translated("deregistering"):
            await self._client.hdel(self._key, consumer)

    async def last_seen(self) -> dict[str, int]:
        """Consumer name -> last heartbeat (ms), sorted by name."""
        with translated("status read"):
            raw = await self._client.hgetall(self._key)
        return {as_text(name): int(seen) for name, seen in sorted(raw.items())}


class BusyBoard:
    """Which portals of a multi-portal fleet are busy (draining a backlog): a sorted set portal -> when its
    serving process last said so (ms). A process writes only its own busy portals, and removes those that
    turned quiet, so one exchange costs O(busy portals); a mark not refreshed for ``ttl_ms`` (its process
    died, or the portal moved and its new process does not find it busy) no longer counts."""

    def __init__(self, client: RedisClient, key: str, ttl_ms: int) -> None:
        self._client = client
        self._key = key
        self._ttl_ms = ttl_ms

    async def exchange(self, busy: list[str], quiet: list[str], now_ms: int) -> set[str]:
        """Mark ``busy``, unmark ``quiet``, forget stale marks; the portals busy now (one round trip)."""
        with translated("busy portals"):
            async with self._client.pipeline(transaction=False) as pipe:
                if busy:
                    pipe.zadd(self._key, dict.fromkeys(busy, now_ms))
                if quiet:
                    pipe.zrem(self._key, *quiet)
                pipe.zremrangebyscore(self._key, "-inf", now_ms - self._ttl_ms)
                pipe.zrange(self._key, 0, -1)
                pipe.pexpire(self._key, self._ttl_ms * 2)
                replies = await pipe.execute()
        return {as_text(p) for p in replies[-2]}
