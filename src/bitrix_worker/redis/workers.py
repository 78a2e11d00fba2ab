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
