"""What the overview shows, read through the same functions as ``bitrix-worker status``, plus human times.

Reads only. ``gather_status`` gives the queue, dead letters by class (over the newest
``dashboard_scan_cap`` entries), counters, workers, breaker and limiter; method pauses come from
``MethodPauses``; the per-minute chart from ``Timeline``.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..errors import BitrixWorkerError
from ..operations import Entity
from ..redis.connection import RedisClient
from ..redis.deadletter import DeadEntry
from ..redis.limits import MethodPauses
from ..redis.search import StreamSearch
from ..status import Status, gather_status
from .timeline import Timeline

_CLASS_PREFIX = re.compile(rb'\{\s*"class"\s*:\s*"([a-z_]*)"')
CLASS_TTL_S = 10.0
METHODS = ["batch"] + [
    f"crm.{e.value}.{m}" for e in Entity for m in ("add", "update", "delete", "list", "fields")
]


def ago(seconds: float | None) -> str:
    """``4 s``, ``3 min``, ``2.5 h``: how people say durations."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def utc(ms: Any) -> str:
    """A stream or outcome time (ms) as ``2026-12-06 10:42:03 UTC``."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(ms) / 1000))
    except (TypeError, ValueError, OverflowError, OSError):
        return "-"


def id_ms(stream_id: str) -> int | None:
    head = stream_id.split("-", 1)[0]
    return int(head) if head.isdigit() else None


@dataclass(slots=True)
class Overview:
    status: Status
    now_ms: int
    pauses: dict[str, float]  # method -> seconds it is still paused
    chart: dict[str, Any]
    per_minute: dict[str, float]
    settings: Settings

    @property
    def breaker_text(self) -> str:
        b = self.status.breaker
        if b is None:
            return "unknown (no webhook configured)"
        if not b.get("open"):
            return f"closed ({b.get('trips', 0)} trips so far)"
        if b.get("manual"):
            since = ago(self.now_ms / 1000 - float(b.get("opened_at") or 0))
            return f"PAUSED by an operator {since} ago ({b.get('reason')}): nothing is consumed until resumed"
        left = float(b.get("until", 0)) - self.now_ms / 1000
        when = f"probes again in {ago(left)}" if left > 0 else "probing now"
        return f"OPEN since a {b.get('reason') or 'failure'}: {when} (cool-down {ago(b.get('cooldown_s'))})"

    @property
    def portal_open(self) -> bool:
        return not (self.status.breaker or {}).get("open")

    @property
    def bucket(self) -> dict[str, Any]:
        """The shared leaky bucket against the portal's limit (from the limiter's state)."""
        s, lim = self.settings, self.status.limiter or {}
        factor = float(lim.get("factor", 1.0))
        rate = s.rate_per_s * s.rate_safety * factor
        booked = float(lim.get("backlog_s", 0.0)) * rate
        return {
            "portal_rate": s.rate_per_s,
            "portal_burst": s.rate_burst,
            "allowed_rate": round(rate, 2),
            "factor": factor,
            "level": min(booked, float(s.rate_burst)),
            "level_pct": round(100 * min(1.0, booked / max(1.0, s.rate_burst * s.rate_safety))),
            "slowed": factor < 0.999,
        }

    @property
    def counters(self) -> dict[str, int]:
        c = self.status.counters
        return {k: c.get(f"outcome:{k}", 0) for k in ("applied", "skipped", "dead_lettered")} | {
            "retries": c.get("retries", 0)
        }

    @property
    def refusals(self) -> dict[str, int]:
        """Operations that ended because a limit kept refusing them (their reasons say "refused")."""
        return {k: v for k, v in self.status.counters.items() if "refused" in k}


def _error_class(raw_error: bytes) -> str:
    """The class of a dead letter's ``error`` JSON. The worker writes ``{"class":"…"`` first, so the class
    is read from that prefix without decoding the whole history; anything else is decoded."""
    match = _CLASS_PREFIX.match(raw_error)
    if match:
        return match.group(1).decode(errors="replace") or "unknown"
    return DeadEntry.from_raw("0-0", {b"error": raw_error}).error_class


async def dead_classes(client: RedisClient, dead_key: str, cap: int) -> tuple[dict[str, int], int]:
    """Dead letters per class over the newest ``cap`` entries, and how many were read."""
    counts: Counter[str] = Counter()
    search, bound, scanned = StreamSearch(client), "+", 0
    while scanned < cap:
        count = min(1000, cap - scanned)
        rows = await search.rows(dead_key, newest=True, high=bound, count=count)
        for _, fields in rows:
            counts[_error_class(fields.get(b"error", b""))] += 1
        scanned += len(rows)
        if len(rows) < count:
            break
        bound = "(" + rows[-1][0]
    return dict(counts.most_common()), scanned


@dataclass(slots=True)
class ClassCache:
    """Dead letters per class, recounted at most every ``ttl_s``: the breakdown need not be as fresh as the
    counters, and a recount reads thousands of entries."""

    ttl_s: float = CLASS_TTL_S
    value: tuple[dict[str, int], int] = ({}, 0)
    at: float = -1e9

    async def get(self, client: RedisClient, dead_key: str, cap: int) -> tuple[dict[str, int], int]:
        if time.monotonic() - self.at > self.ttl_s:
            self.value = await dead_classes(client, dead_key, cap)
            self.at = time.monotonic()
        return self.value


async def gather_overview(
    client: RedisClient, settings: Settings, timeline: Timeline, classes: ClassCache
) -> Overview:
    """``gather_status`` for everything but the class breakdown, which is counted here on raw bytes (the
    status scan decodes every entry's history: too slow for a page that refreshes every few seconds)."""
    status = await gather_status(client, settings, scan_cap=0)
    status.dead_letter_by_class, status.dead_letter_scanned = await classes.get(
        client, settings.dead_stream, settings.dashboard_scan_cap
    )
    status.dead_letter_scan_cap = settings.dashboard_scan_cap
    now = await StreamSearch(client).server_ms(settings.stream)
    pauses: dict[str, float] = {}
    if status.portal is not None:
        try:
            pauses = await MethodPauses(
                client,
                settings.keys.method_pause(status.portal),
                budget_s=settings.operating_budget_s,
                safety=settings.operating_safety,
                clock=lambda: now / 1000,
            ).paused_for(METHODS)
        except BitrixWorkerError:
            pauses = {}
    await timeline.refresh(StreamSearch(client), now)
    return Overview(status, now, pauses, timeline.series(now), timeline.last_minutes(now), settings)
