"""Dead letters filtered by class, entity, key and time, a page at a time, with a bounded scan per page.

A filter on a hundred thousand entries must not read them all for one page: each page reads at most
``scan_cap`` entries (newest first, from a cursor) and, if that did not fill the page, offers to go on from
where it stopped. Time bounds become stream-id bounds (a dead letter's id is the time it was dead-lettered),
and a key filter skips entries whose raw payload cannot contain the key before any JSON is decoded.
Selections for replay and purge read oldest first (the order replay keeps per key), up to ``limit``.
"""

from __future__ import annotations

import calendar
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..redis.connection import RedisClient
from ..redis.deadletter import DeadEntry
from ..redis.search import StreamSearch

PAGE_SIZE = 50
READ = 500


def parse_time(raw: str | None) -> int | None:
    """``2026-12-06T10:42`` (a datetime-local field, read as UTC) or ``…:SS`` -> ms; None when empty."""
    text = (raw or "").strip()
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(text, fmt)) * 1000
        except ValueError:
            continue
    raise ValueError(f"not a time: {text!r} (use YYYY-MM-DDTHH:MM, UTC)")


@dataclass(frozen=True, slots=True)
class DeadFilter:
    error_class: str = ""
    entity: str = ""
    key: str = ""
    since: str = ""  # as typed (UTC); parsed by since_ms / until_ms
    until: str = ""

    @classmethod
    def from_params(cls, params: Any) -> DeadFilter:
        return cls(
            *(str(params.get(n, "") or "").strip() for n in ("class", "entity", "key", "since", "until"))
        )

    @property
    def active(self) -> bool:
        return any((self.error_class, self.entity, self.key, self.since, self.until))

    def query(self) -> dict[str, str]:
        pairs = zip(("class", "entity", "key", "since", "until"), self._values(), strict=True)
        return {k: v for k, v in pairs if v}

    def _values(self) -> tuple[str, ...]:
        return (self.error_class, self.entity, self.key, self.since, self.until)

    def bounds(self) -> tuple[str, str]:
        """(min, max) stream ids for XRANGE; ValueError for a malformed time."""
        since, until = parse_time(self.since), parse_time(self.until)
        return (f"{since}-0" if since is not None else "-", f"{until}-0" if until is not None else "+")

    def may_match(self, raw: dict[Any, Any]) -> bool:
        return not self.key or json.dumps(self.key, ensure_ascii=False)[1:-1].encode() in raw.get(
            b"payload", b""
        )

    def matches(self, entry: DeadEntry) -> bool:
        op = entry.operation
        if self.error_class and entry.error_class != self.error_class:
            return False
        if self.entity and op.get("entity") != self.entity:
            return False
        return not self.key or op.get("key") == self.key


@dataclass(slots=True)
class DeadPage:
    entries: list[DeadEntry] = field(default_factory=list)
    scanned: int = 0
    next_before: str | None = None  # cursor for the next (older) page; None: nothing older


async def dead_page(
    client: RedisClient,
    dead_key: str,
    f: DeadFilter,
    *,
    before: str | None,
    scan_cap: int,
    size: int = PAGE_SIZE,
) -> DeadPage:
    """Newest first from ``before`` (exclusive): up to ``size`` matches, reading at most ``scan_cap``."""
    low, high = f.bounds()
    bound = f"({before}" if before else high
    page, search = DeadPage(), StreamSearch(client)
    while page.scanned < scan_cap:
        rows = await search.rows(dead_key, newest=True, low=low, high=bound, count=READ)
        for raw_id, raw in rows:
            page.scanned += 1
            bound = "(" + raw_id
            if f.may_match(raw):
                entry = DeadEntry.from_raw(raw_id, raw)
                if f.matches(entry):
                    page.entries.append(entry)
                    if len(page.entries) >= size:
                        break
        if len(page.entries) >= size or len(rows) < READ:
            break
    more = await search.rows(dead_key, newest=True, low=low, high=bound, count=1)
    page.next_before = bound[1:] if more and bound.startswith("(") else None
    return page


async def select(
    client: RedisClient, dead_key: str, f: DeadFilter, *, limit: int, scan_cap: int
) -> tuple[list[DeadEntry], bool]:
    """Matching entries oldest first, at most ``limit``, reading at most ``scan_cap`` entries; True when
    more may match (the limit was reached, or the scan stopped before the end)."""
    low, high = f.bounds()
    bound, chosen, scanned, search = low, list[DeadEntry](), 0, StreamSearch(client)
    while scanned < scan_cap:
        count = min(READ, scan_cap - scanned)
        rows = await search.rows(dead_key, newest=False, low=bound, high=high, count=count)
        scanned += len(rows)
        for raw_id, raw in rows:
            if f.may_match(raw):
                entry = DeadEntry.from_raw(raw_id, raw)
                if f.matches(entry):
                    if len(chosen) >= limit:
                        return chosen, True
                    chosen.append(entry)
        if len(rows) < count:
            return chosen, False
        bound = "(" + rows[-1][0]
    return chosen, bool(await search.rows(dead_key, newest=False, low=bound, high=high, count=1))
