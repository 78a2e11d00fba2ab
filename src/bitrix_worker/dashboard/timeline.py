"""Outcomes per minute for the overview chart, kept in the dashboard process and read incrementally.

The worker appends every final outcome to the capped outcomes stream with its time (``at_ms``). The first
refresh reads the last hour newest-first (at most ``read_cap`` entries: a busy hour holds more than a page
should read, and the chart then says it is partial); later refreshes read only what was added since the last
entry seen. Minutes are counted by ``at_ms``; the stream's own ids only bound the reads.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from ..redis.deadletter import as_text, stream_rows

KINDS = ("applied", "skipped", "dead_lettered")
WINDOW_MIN = 60
PAGE = 1000
READ_CAP = 20_000


@dataclass(slots=True)
class Timeline:
    key: str
    window_min: int = WINDOW_MIN
    read_cap: int = READ_CAP
    minutes: dict[int, Counter[str]] = field(default_factory=dict)
    last_id: str | None = None
    partial_before_min: int | None = None  # minutes before this one were not fully read
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _count(self, raw: dict[Any, Any]) -> None:
        try:
            minute = int(raw.get(b"at_ms", b"0")) // 60_000
        except ValueError:
            return
        outcome = as_text(raw.get(b"outcome", b""))
        if outcome in KINDS:
            self.minutes.setdefault(minute, Counter())[outcome] += 1

    async def refresh(self, client: Redis, now_ms: int) -> None:
        async with self._lock:
            if self.last_id is None:
                await self._first_read(client, now_ms)
            else:
                await self._read_new(client)
            oldest = now_ms // 60_000 - self.window_min
            for minute in [m for m in self.minutes if m <= oldest]:
                del self.minutes[minute]

    async def _first_read(self, client: Redis, now_ms: int) -> None:
        floor = f"{now_ms - self.window_min * 60_000}-0"
        bound, read = "+", 0
        newest = await client.xrevrange(self.key, max="+", min="-", count=1)
        self.last_id = as_text(newest[0][0]) if newest else "0-0"
        while read < self.read_cap:
            rows = stream_rows(await client.xrevrange(self.key, max=bound, min=floor, count=PAGE))
            for _, raw in rows:
                self._count(raw)
            read += len(rows)
            if len(rows) < PAGE:
                return
            bound = "(" + as_text(rows[-1][0])
        self.partial_before_min = int(bound[1:].split("-")[0]) // 60_000 + 1

    async def _read_new(self, client: Redis) -> None:
        read = 0
        while read < self.read_cap:
            rows = stream_rows(await client.xrange(self.key, min=f"({self.last_id}", max="+", count=PAGE))
            for _, raw in rows:
                self._count(raw)
            read += len(rows)
            if rows:
                self.last_id = as_text(rows[-1][0])
            if len(rows) < PAGE:
                return

    def series(self, now_ms: int) -> dict[str, Any]:
        """Per-minute counts for the last ``window_min`` minutes, oldest first, for the chart."""
        current = now_ms // 60_000
        minutes = list(range(current - self.window_min + 1, current + 1))
        data: dict[str, Any] = {"t": [m * 60 for m in minutes]}
        for kind in KINDS:
            data[kind] = [self.minutes.get(m, Counter())[kind] for m in minutes]
        data["partial_before"] = None if self.partial_before_min is None else self.partial_before_min * 60
        return data

    def last_minutes(self, now_ms: int, n: int = 5) -> dict[str, float]:
        """Per-minute rate of each outcome over the last ``n`` complete minutes."""
        current = now_ms // 60_000
        span = [self.minutes.get(m, Counter()) for m in range(current - n, current)]
        return {kind: sum(c[kind] for c in span) / n for kind in KINDS}
