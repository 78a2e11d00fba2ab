"""What Redis remembers about the stream's mapping store (``vouching``): its id, the highest fencing token
written to it, whether it vouches for keys it does not know, and which store each live worker uses (and from
which host, whether SQLite: ``vouching.StoreUse``)."""

from __future__ import annotations

import socket

from ..defaults import StreamKeys
from ..values import as_text
from ..vouching import StoreRecord, StoreUse
from .connection import RedisClient
from .errors import translated


class StoreRegistry:
    def __init__(self, client: RedisClient, keys: StreamKeys, *, host: str | None = None) -> None:
        self._client = client
        self._keys = keys
        self.host = host or socket.gethostname()
        """The machine this worker runs on, recorded beside its store (SQLite is one host's file)."""

    async def read(self) -> StoreRecord | None:
        with translated("store record"):
            raw = {as_text(k): as_text(v) for k, v in (await self._client.hgetall(self._keys.store)).items()}
        if "id" not in raw:
            return None
        return StoreRecord(raw["id"], int(raw.get("fence", 0)), raw.get("vouched") == "1")

    async def write(self, record: StoreRecord) -> None:
        with translated("store record"):
            await self._client.hset(
                self._keys.store,
                mapping={"id": record.store_id, "fence": record.fence, "vouched": int(record.vouched)},
            )

    async def vouch(self) -> None:
        with translated("store record"):
            await self._client.hset(self._keys.store, "vouched", 1)

    async def raise_fence(self, store_id: str, fence: int) -> None:
        """Record that ``store_id`` holds writes up to ``fence`` (never lowers it; another store's record
        is left alone)."""
        with translated("store record"):
            current = await self._client.hmget(self._keys.store, ["id", "fence"])
            if current[0] is not None and as_text(current[0]) == store_id and int(current[1] or 0) < fence:
                await self._client.hset(self._keys.store, "fence", fence)

    async def stream_has_history(self) -> bool:
        """Has any worker run on this stream (its fencing counter exists)?"""
        with translated("store record"):
            return bool(await self._client.exists(self._keys.fence))

    async def worker_stores(self) -> dict[str, StoreUse]:
        with translated("store record"):
            raw = await self._client.hgetall(self._keys.worker_stores)
        return {as_text(k): StoreUse.decode(as_text(v)) for k, v in raw.items()}

    async def register(self, consumer: str, use: StoreUse) -> None:
        with translated("store record"):
            await self._client.hset(self._keys.worker_stores, consumer, use.encode())

    async def leave(self, consumer: str) -> None:
        with translated("store record"):
            await self._client.hdel(self._keys.worker_stores, consumer)
