"""Per-key create leases with fencing tokens.

The per-key turn (claim.lua) already keeps two live units of one key apart. A lease closes the remaining gap:
a worker that stalls past the reclaim idle time (GC pause, frozen VM) while its entry is reclaimed by another.
Before a create, each worker takes ``SET lease NX PX ttl`` with a token from one ``INCR``; the mapping store
refuses writes whose token is lower than the last one written, so a zombie can neither create concurrently
with its successor (it finds the lease taken) nor overwrite its successor's mapping.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .defaults import StreamKeys
from .errors import StoreError
from .redis.scripts import register


class Leases:
    def __init__(self, client: Redis, keys: StreamKeys, *, ttl_ms: int) -> None:
        self._client = client
        self._keys = keys
        self._ttl_ms = ttl_ms
        self._release = register(client, "release_leases")

    async def token(self) -> int:
        """A fencing token greater than every token handed out before, across all workers."""
        try:
            return int(await self._client.incr(self._keys.fence))
        except RedisError as exc:
            raise StoreError(f"fencing token failed: {exc}") from exc

    async def acquire(self, idents: Sequence[str], token: int) -> dict[str, int]:
        """Try to lease each key; returns the idents that are busy, with the ms until their lease ends."""
        if not idents:
            return {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for ident in idents:
                    pipe.set(self._keys.lease(ident), token, nx=True, px=self._ttl_ms)
                got = await pipe.execute()
                busy = [ident for ident, ok in zip(idents, got, strict=True) if not ok]
                for ident in busy:
                    pipe.pttl(self._keys.lease(ident))
                ttls = await pipe.execute() if busy else []
        except RedisError as exc:
            raise StoreError(f"lease failed: {exc}") from exc
        return {ident: max(1, int(ttl)) for ident, ttl in zip(busy, ttls, strict=True)}

    async def release(self, idents: Sequence[str], token: int) -> None:
        if not idents:
            return
        try:
            await self._release(keys=[self._keys.lease(i) for i in idents], args=[token])
        except RedisError as exc:
            raise StoreError(f"lease release failed: {exc}") from exc
