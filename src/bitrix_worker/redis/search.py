"""Read-only Redis access for ``lookup`` and the dashboard: bounded stream scans and one key's queues.

Nothing here writes. Streams can be large (a million-entry backlog), so every read is a page or a bounded
step: ``matches`` runs the filter inside Redis (``scan.lua``, ``STEP`` entries a call, a millisecond or two
of server time) so only candidates travel and get parsed; ``rows`` reads one page for callers that need
every entry (the chart, the dead-letter list). Redis failures raise ``StoreError``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from ..defaults import StreamKeys
from ..values import as_text
from .connection import RedisClient, server_ms
from .errors import translated
from .scripts import register

STEP = 2000
"""Entries one scan.lua call reads."""

Row = tuple[str, dict[bytes, bytes]]
Filters = list[tuple[str, bytes]]


@dataclass(slots=True)
class Scan:
    """How far a bounded scan got: entries read, and whether it stopped before the end."""

    scanned: int = 0
    truncated: bool = False


def _row(raw_id: Any, fields: Any) -> Row:
    return as_text(raw_id), dict(fields or {})


class StreamSearch:
    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self._scan = register(client, "scan")

    async def server_ms(self, key: str) -> int:
        """The clock of the node holding ``key`` (``connection.server_ms``)."""
        with translated("time read"):
            return await server_ms(self.client, key)

    async def rows(self, key: str, *, newest: bool, low: str = "-", high: str = "+", count: int) -> list[Row]:
        """One page between ``low`` and ``high`` (ids or ``(id`` for exclusive), newest or oldest first."""
        with translated("stream read"):
            if newest:
                raw = await self.client.xrevrange(key, max=high, min=low, count=count)
            else:
                raw = await self.client.xrange(key, min=low, max=high, count=count)
        return [_row(i, f) for i, f in raw or []]

    async def matches(
        self, key: str, filters: Filters, scan: Scan, *, newest: bool, cap: int, start: str | None = None
    ) -> AsyncGenerator[Row, None]:
        """Entries that pass ``filters`` (field, ``eq:value`` or ``has:text``; any pair matching) from
        ``start`` (default: the newest or the oldest end), reading at most ``cap``. A ``has`` filter is a
        pre-filter: callers check each candidate exactly."""
        bound = start or ("+" if newest else "-")
        args: list[Any] = [x for pair in filters for x in pair]
        while scan.scanned < cap:
            want = min(STEP, cap - scan.scanned)
            with translated("stream search"):
                found, last, read = await self._scan(
                    keys=[key], args=["rev" if newest else "fwd", bound, want, *args]
                )
            scan.scanned += int(read)
            for raw_id, flat in found:
                yield as_text(raw_id), {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
            if int(read) < want:
                return
            bound = "(" + as_text(last)
        more = await self.rows(key, newest=newest, count=1, **({"high": bound} if newest else {"low": bound}))
        scan.truncated = bool(more)

    async def entry(self, key: str, entry_id: str) -> dict[bytes, bytes] | None:
        rows = await self.rows(key, newest=False, low=entry_id, high=entry_id, count=1)
        return rows[0][1] if rows else None

    async def pending_consumer(self, stream: str, group: str, entry_id: str) -> str | None:
        """The consumer an entry is pending on, or None (not delivered, or no consumer group yet)."""
        with translated("pending read"):
            try:
                rows = await self.client.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    return None
                raise
        return as_text(rows[0]["consumer"]) if rows else None

    async def scheduled(self, keys: StreamKeys, ident: str) -> list[tuple[str, str, int | None]]:
        """(origin id, unit JSON, due ms) of the key's scheduled retries. Only a held key has any, so the
        schedule is scanned only then."""
        with translated("schedule read"):
            if not int(await self.client.hget(keys.holds, ident) or 0):
                return []
            needle = json.dumps(ident).encode()
            found = []
            async for origin, unit in self.client.hscan_iter(keys.schedule_data, count=STEP):
                if needle in unit:
                    due = await self.client.zscore(keys.schedule, origin)
                    found.append((as_text(origin), as_text(unit), None if due is None else int(due)))
        return found

    async def schedule_unit(self, keys: StreamKeys, origin: str) -> str | None:
        with translated("schedule read"):
            unit = await self.client.hget(keys.schedule_data, origin)
        return None if unit is None else as_text(unit)

    async def parked(self, keys: StreamKeys, ident: str, cap: int) -> list[str]:
        """The key's parked items, oldest first, at most ``cap`` (layout of the parked hash:
        redis/lua/turns.lua): operations (JSON ``{id, op, f}``, plus ``r`` when it has refs and ``w``, the
        keys it waited for when claimed) and waiter tokens (``{t, d}``: the operation ``t`` of key ``d``
        waits for this key's operations before it)."""
        with translated("parked read"):
            head, tail = await self.client.hmget(keys.parked, [f"h|{ident}", f"t|{ident}"])
            first, end = int(head or 0), int(tail or 0)
            names = [f"e|{n}|{ident}" for n in range(first, min(end, first + cap))]
            items = await self.client.hmget(keys.parked, names) if names else []
        return [as_text(i) for i in items if i is not None]

    async def ref_waits(self, keys: StreamKeys, ident: str, ids: list[str]) -> tuple[str | None, list[int]]:
        """The operation that holds the key's turn while it waits for referenced keys (JSON like a parked
        item, or None), and how many referenced keys each of ``ids`` still waits for."""
        with translated("parked read"):
            holder = await self.client.hget(keys.parked, f"x|{ident}")
            counts = await self.client.hmget(keys.parked, [f"w|{i}" for i in ids]) if ids else []
        return (None if holder is None else as_text(holder)), [int(c or 0) for c in counts]
