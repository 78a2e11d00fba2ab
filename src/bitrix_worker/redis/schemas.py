"""The shared schema cache: one parsed field schema per portal and entity, in Redis, for every worker.

Fetching a schema costs a few calls (fields, pipelines, status lists, currencies), so it happens about once
per ``ttl_s`` per entity for the whole fleet, never per operation. A schema older than ``ttl_s`` is stale:
one worker (holding a short ``SET NX`` claim) refetches it while the others keep validating with the
stale copy, which Redis keeps for another ``ttl_s`` before expiring it. ``load(..., refresh=True)`` is the
early refresh for a field error the cached schema did not predict (a field added on the portal).

Each process also keeps the schema it last read for ``memo_s`` (decoding the JSON costs about as much as
a third of one operation's CPU), so per operation a load is a dict lookup; a refresh by another worker
reaches this one within ``memo_s``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..defaults import StreamKeys
from ..errors import BitrixError
from ..schema import EntitySchema
from ..values import Clock, as_text
from .connection import RedisClient
from .errors import translated

REFRESH_CLAIM_S = 30.0
MEMO_S = 10.0  # a refetch that takes longer than this may be started by a second worker

Fetch = Callable[[], Awaitable[EntitySchema]]


@dataclass(frozen=True, slots=True)
class Cached:
    schema: EntitySchema
    fresh: bool


class SchemaCache:
    """Schemas of one portal; ``fetch`` callables are passed per load (they need the client and limiter)."""

    def __init__(
        self,
        client: RedisClient,
        keys: StreamKeys,
        portal: str,
        *,
        ttl_s: float,
        memo_s: float = MEMO_S,
        clock: Clock | None = None,
    ) -> None:
        self._memo_s = memo_s
        self._memo: dict[str, tuple[EntitySchema, float]] = {}
        self._client = client
        self._keys = keys
        self._portal = portal
        self._ttl_s = ttl_s
        self._clock = clock or time.time

    async def get(self, entity: str) -> Cached | None:
        """The cached schema and whether it is fresh; None when absent or unreadable (refetch it)."""
        with translated("schema cache read"):
            raw = await self._client.get(self._keys.schema(self._portal, entity))
        if raw is None:
            return None
        try:
            schema = EntitySchema.from_json(json.loads(as_text(raw)))
        except ValueError:
            return None  # another format (an older version wrote it): fetch anew
        return Cached(schema, self._clock() - schema.fetched_at < self._ttl_s)

    async def put(self, schema: EntitySchema) -> None:
        """Store for ``2 * ttl_s``: fresh for the first half, a stale fallback for the second."""
        data = json.dumps(schema.as_json(), separators=(",", ":"), ensure_ascii=False)
        with translated("schema cache write"):
            await self._client.set(
                self._keys.schema(self._portal, schema.entity), data, px=int(self._ttl_s * 2000)
            )

    async def invalidate(self, entity: str) -> bool:
        with translated("schema cache invalidate"):
            return bool(await self._client.delete(self._keys.schema(self._portal, entity)))

    async def _claim(self, entity: str) -> bool:
        with translated("schema refresh claim"):
            claimed = await self._client.set(
                self._keys.schema_refresh(self._portal, entity), "1", nx=True, px=int(REFRESH_CLAIM_S * 1000)
            )
        return bool(claimed)

    async def _release(self, entity: str) -> None:
        with translated("schema refresh release"):
            await self._client.delete(self._keys.schema_refresh(self._portal, entity))

    async def _refetch(self, entity: str, fetch: Fetch, stale: EntitySchema) -> EntitySchema:
        """Refetch under the claim. If the portal fails, go on with the stale copy and keep the claim until
        it expires: while the portal is failing, the fleet retries the fetch once per ``REFRESH_CLAIM_S``."""
        try:
            schema = await fetch()
        except BitrixError:
            return stale
        await self.put(schema)
        await self._release(entity)
        return schema

    async def load(
        self, entity: str, fetch: Fetch, *, refresh: bool = False, refresh_older_than: float | None = None
    ) -> EntitySchema:
        """The schema to validate with: cached if fresh (and not ``refresh``), else fetched by one worker.

        Without any cached copy every caller fetches (a cold start costs each worker one fetch once) and a
        failing portal raises its BitrixError. With a stale or distrusted copy only the claim holder
        fetches; the others, and the holder if the fetch fails, use the copy meanwhile.
        ``refresh_older_than``: an early refresh only if the shared copy is at least that old (seconds), so
        a surprise seen by many workers at once costs the fleet one fetch per that interval.
        """
        now = self._clock()
        memo = self._memo.get(entity)
        if (
            memo is not None
            and not refresh
            and now - memo[1] < self._memo_s
            and now - memo[0].fetched_at < self._ttl_s
        ):
            return memo[0]
        cached = await self.get(entity)
        if refresh and cached is not None and refresh_older_than is not None:
            refresh = now - cached.schema.fetched_at >= refresh_older_than
        if cached is not None and cached.fresh and not refresh:
            schema = cached.schema
        elif cached is None:
            schema = await fetch()
            await self.put(schema)
        elif await self._claim(entity):
            schema = await self._refetch(entity, fetch, cached.schema)
        else:
            schema = cached.schema
        self._memo[entity] = (schema, now)
        return schema
