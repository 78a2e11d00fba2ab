"""Read-only views of the queue for ``status``, ``/metrics`` and ``--until-idle``: a handful of O(1)/O(log n)
reads each, timed on the Redis server's clock (``TIME``), the clock that stamps stream ids and the retry
schedule, so ages are right even when this host's clock is off."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from ..defaults import StreamKeys
from ..errors import StoreError
from ..values import as_text
from .connection import RedisClient, server_ms
from .errors import translated


@dataclass(slots=True)
class QueueGauges:
    """The cheap numbers: what /metrics refreshes on every scrape."""

    stream_length: int = 0
    pending: int = 0
    pending_by_consumer: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_s: float | None = None
    lag_s: float | None = None  # age of the oldest entry still in the stream (unread or pending)
    scheduled: int = 0
    next_due_in_s: float | None = None
    dead_letter_size: int = 0
    group_exists: bool = True
    # operations whose turn waits for the earlier operations of a key they refer to (a count the turn
    # scripts keep in the parked hash; each such operation is counted once, however many keys it names)
    waiting_for_refs: int = 0


def _id_ms(stream_id: Any) -> int:
    return int(as_text(stream_id).split("-", 1)[0])


class QueueReader:
    """Reads of one stream's queue state; every Redis failure is a StoreError."""

    def __init__(self, client: RedisClient, keys: StreamKeys, group: str) -> None:
        self._client = client
        self._keys = keys
        self._group = group

    async def ping(self) -> None:
        with translated("ping"):
            await self._client.ping()

    async def server_ms(self) -> int:
        with translated("status read"):
            return await server_ms(self._client, self._keys.stream)

    async def counters(self) -> dict[str, int]:
        """The lifetime counters every worker adds to (``outcome:<kind>``, ``<outcome>:<reason>``)."""
        with translated("status read"):
            raw = await self._client.hgetall(self._keys.counters)
        return {as_text(k): int(v) for k, v in sorted(raw.items())}

    async def is_idle(self) -> bool:
        """Nothing new, pending, in flight (held) or scheduled: what ``--until-idle`` waits for."""
        k = self._keys
        with translated("status read"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xlen(k.stream)
                pipe.zcard(k.schedule)
                pipe.hlen(k.holds)
                length, scheduled, held = await pipe.execute()
        return int(length) == 0 and int(scheduled) == 0 and int(held) == 0

    async def gauges(self, now_ms: int | None = None) -> QueueGauges:
        keys = self._keys
        now = now_ms if now_ms is not None else await self.server_ms()
        with translated("status read"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xlen(keys.stream)
                pipe.xrange(keys.stream, "-", "+", count=1)
                pipe.zcard(keys.schedule)
                pipe.zrange(keys.schedule, 0, 0, withscores=True)
                pipe.xlen(keys.dead)
                pipe.xpending(keys.stream, self._group)
                pipe.hget(keys.parked, "n|waits")
                length, first, scheduled, due, dead, pending, waits = await pipe.execute(raise_on_error=False)
        for value in (length, first, scheduled, due, dead, waits):
            if isinstance(value, Exception):
                raise StoreError(f"status read failed: {value}")
        g = QueueGauges(int(length), scheduled=int(scheduled), dead_letter_size=int(dead))
        g.waiting_for_refs = int(waits or 0)
        if first:
            g.lag_s = max(0.0, (now - _id_ms(first[0][0])) / 1000)
        if due:
            g.next_due_in_s = (float(due[0][1]) - now) / 1000
        if isinstance(pending, ResponseError):
            g.group_exists = False  # NOGROUP: no worker has started on this stream yet
        elif isinstance(pending, Exception):
            raise StoreError(f"status read failed: {pending}")
        else:
            g.pending = int(pending["pending"])
            g.pending_by_consumer = {
                as_text(c["name"]): int(c["pending"]) for c in pending.get("consumers") or []
            }
            if g.pending and pending.get("min"):
                g.oldest_pending_age_s = max(0.0, (now - _id_ms(pending["min"])) / 1000)
        return g


PAGE = 1000


async def outcome_records(
    client: RedisClient, keys: StreamKeys, *, limit: int | None = None
) -> list[dict[str, str]]:
    """Outcome records of the capped outcomes stream, oldest first (at most ``limit``)."""
    records: list[dict[str, str]] = []
    start = "-"
    while limit is None or len(records) < limit:
        with translated("outcomes read"):
            rows = list(await client.xrange(keys.outcomes, min=start, max="+", count=PAGE) or [])
        records += [{as_text(k): as_text(v) for k, v in (f or {}).items()} for _, f in rows]
        if len(rows) < PAGE:
            break
        start = "(" + as_text(rows[-1][0])
    return records if limit is None else records[:limit]
