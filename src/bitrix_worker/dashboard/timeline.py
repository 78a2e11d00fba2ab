"""Outcomes per minute for the overview chart, kept in the dashboard process and read incrementally.

The worker appends every final outcome to the capped outcomes stream with its time (``at_ms``). Each refresh
reads what was added since the last entry seen (newer) and, until the whole last hour has been read, older
entries for at most ``backfill_s`` (backfill), so no request reads a busy hour at once: the chart says which
minutes are still partial. Minutes are counted by ``at_ms``; the stream's own ids only bound reads.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..redis.search import StreamSearch
from ..values import as_text

KINDS = ("applied", "skipped", "dead_lettered")
WINDOW_MIN = 60
PAGE = 500
READ_CAP = 5_000
BACKFILL_S = 0.03


@dataclass(slots=True)
class Timeline:
    key: str
    window_min: int = WINDOW_MIN
    read_cap: int = READ_CAP
    backfill_s: float = BACKFILL_S
    minutes: dict[int, Counter[str]] = field(default_factory=dict)
    last_id: str | None = None  # newest entry counted
    backfill_before: str | None = None  # older entries than this are still to be read ("" when done)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _count(self, raw: dict[Any, Any]) -> None:
        try:
            minute = int(raw.get(b"at_ms", b"0")) // 60_000
        except ValueError:
            return
        outcome = as_text(raw.get(b"outcome", b""))
        if outcome in KINDS:
            self.minutes.setdefault(minute, Counter())[outcome] += 1

    async def refresh(self, search: StreamSearch, now_ms: int) -> None:
        async with self._lock:
            if self.last_id is None:
                newest = await search.rows(self.key, newest=True, count=1)
                self.last_id = newest[0][0] if newest else "0-0"
                self.backfill_before = self.last_id if newest else ""
                if newest:
                    self._count(newest[0][1])
            await self._read_new(search)
            await self._backfill(search, now_ms)
            oldest = now_ms // 60_000 - self.window_min
            for minute in [m for m in self.minutes if m <= oldest]:
                del self.minutes[minute]

    async def _backfill(self, search: StreamSearch, now_ms: int) -> None:
        if not self.backfill_before:
            return
        floor, stop = f"{now_ms - self.window_min * 60_000}-0", time.monotonic() + self.backfill_s
        while time.monotonic() < stop:
            rows = await search.rows(
                self.key, newest=True, low=floor, high=f"({self.backfill_before}", count=PAGE
            )
            for _, fields in rows:
                self._count(fields)
            if len(rows) < PAGE:
                self.backfill_before = ""
                return
            self.backfill_before = rows[-1][0]

    async def _read_new(self, search: StreamSearch) -> None:
        read = 0
        while read < self.read_cap:
            count = min(PAGE, self.read_cap - read)
            rows = await search.rows(self.key, newest=False, low=f"({self.last_id}", count=count)
            for _, raw in rows:
                self._count(raw)
            read += len(rows)
            if rows:
                self.last_id = rows[-1][0]
            if len(rows) < count:
                return

    def series(self, now_ms: int) -> dict[str, Any]:
        """Per-minute counts for the last ``window_min`` minutes, oldest first, for the chart."""
        current = now_ms // 60_000
        minutes = list(range(current - self.window_min + 1, current + 1))
        data: dict[str, Any] = {"t": [m * 60 for m in minutes]}
        for kind in KINDS:
            data[kind] = [self.minutes.get(m, Counter())[kind] for m in minutes]
        partial = self.backfill_before.split("-")[0] if self.backfill_before else ""
        data["partial_before"] = int(partial) // 60_000 * 60 + 60 if partial else None
        return data

    def last_minutes(self, now_ms: int, n: int = 5) -> dict[str, float]:
        """Per-minute rate of each outcome over the last ``n`` minutes (the current one included)."""
        current = now_ms // 60_000
        span = [self.minutes.get(m, Counter()) for m in range(current - n + 1, current + 1)]
        return {kind: sum(c[kind] for c in span) / n for kind in KINDS}
