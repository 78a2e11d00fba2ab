"""One read of what an operator asks first: is it keeping up, is anything stuck, is Bitrix24 refusing us.

Times are measured on the Redis server's clock (``TIME``), the same clock that stamps stream ids and the
retry schedule, so the ages are right even when this host's clock is off. Reads only; nothing is changed.
The dead-letter class breakdown scans the stream and stops after ``SCAN_CAP`` entries (and says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import Settings
from .defaults import LIVE_HEARTBEATS
from .errors import BitrixWorkerError, StoreError
from .mapping import DEFAULT_TABLE, MappingStore
from .redis.breaker import Breaker
from .redis.connection import RedisClient
from .redis.deadletter import SCAN_CAP, DeadEntry, DeadLetters
from .redis.gauges import QueueGauges, QueueReader
from .redis.limits import Limiter
from .redis.workers import WorkerRegistry
from .replay_guard import moved_on, stream_ms


@dataclass(slots=True)
class Status:
    stream: str
    group: str
    dead_stream: str
    queue: QueueGauges
    dead_letter_by_class: dict[str, int]
    dead_letter_scanned: int
    dead_letter_scan_cap: int
    counters: dict[str, int]
    workers: list[dict[str, Any]]
    portal: str | None = None
    breaker: dict[str, Any] | None = None
    limiter: dict[str, Any] | None = None
    mapping: dict[str, Any] = field(default_factory=dict)

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self.workers if w["live"])

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["live_workers"] = self.live_workers
        data["dead_letter_truncated"] = self.dead_letter_scanned < self.queue.dead_letter_size
        return data


async def _workers(client: RedisClient, settings: Settings, now: int) -> list[dict[str, Any]]:
    window_ms = LIVE_HEARTBEATS * settings.heartbeat_interval_s * 1000
    rows = []
    for name, seen in (await WorkerRegistry(client, settings.keys.workers).last_seen()).items():
        age_ms = max(0, now - seen)
        rows.append({"consumer": name, "last_seen_s": round(age_ms / 1000, 1), "live": age_ms <= window_ms})
    return rows


async def _portal_state(
    client: RedisClient, settings: Settings
) -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
    try:
        portal = settings.portal_name
    except BitrixWorkerError:
        return None, None, None  # no webhook configured: we cannot name the portal's keys
    keys = settings.keys
    breaker = await Breaker(
        client, keys.breaker(portal), cooldown_s=settings.breaker_cooldown_s,
        max_cooldown_s=settings.breaker_max_cooldown_s,
    ).state()  # fmt: skip
    limiter = await Limiter(
        client, keys.limiter(portal), rate_per_s=settings.rate_per_s, burst=settings.limiter_burst,
        safety=settings.rate_fraction,
    ).state()  # fmt: skip
    return (
        portal,
        asdict(breaker),
        {"factor": round(limiter.factor, 3), "backlog_s": round(limiter.backlog_s, 3)},
    )


def missing_sqlite_file(database_url: str) -> str | None:
    """The path of a SQLite store that does not exist yet (reads must not create it), else None."""
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:" and not Path(path).exists():
            return path
    return None


async def mapping_counts(database_url: str, *, table: str | None = DEFAULT_TABLE) -> dict[str, Any]:
    """Rows per state in the mapping store (``table``: a registry portal's own; None for an id the registry
    does not hold); a missing SQLite file or table is reported, never created."""
    if table is None:
        return {"active": 0, "deleted": 0, "note": "not a registry portal: it has no mapping table"}
    path = missing_sqlite_file(database_url)
    if path is not None:
        return {"active": 0, "deleted": 0, "note": f"{path} does not exist yet"}
    try:
        store = await MappingStore.connect(database_url, table=table)
    except StoreError as exc:
        return {"error": str(exc)}
    try:
        return {"active": await store.count("active"), "deleted": await store.count("deleted")}
    except StoreError as exc:
        return {"error": str(exc)}
    finally:
        await store.close()


async def replay_hazards(
    database_url: str, entries: Sequence[DeadEntry], *, table: str = DEFAULT_TABLE
) -> dict[str, str]:
    """Dead-letter id -> why replaying it would roll its key back (``replay_guard``); safe ones are absent.
    ``table``: the mapping table of the dead letters' portal."""
    wanted = [e for e in entries if e.operation.get("entity") and e.operation.get("key")]
    if not wanted or missing_sqlite_file(database_url) is not None:
        return {}  # no store yet: nothing was ever applied
    store = await MappingStore.connect(database_url, table=table)
    try:
        last = await store.last_writes(
            [(str(e.operation["entity"]), str(e.operation["key"])) for e in wanted]
        )
    finally:
        await store.close()
    hazards = {}
    for e in wanted:
        key = (str(e.operation["entity"]), str(e.operation["key"]))
        enqueued = stream_ms(str(e.error.get("stream_id") or e.id))
        reason = moved_on(e.operation, enqueued, last.get(key))
        if reason is not None:
            hazards[e.id] = reason
    return hazards


async def gather_status(
    client: RedisClient, settings: Settings, *, scan_cap: int = SCAN_CAP, table: str | None = DEFAULT_TABLE
) -> Status:
    """Everything ``bitrix-worker status`` shows (``table``: the portal's mapping table). Redis failures
    raise StoreError."""
    reader = QueueReader(client, settings.keys, settings.group)
    now = await reader.server_ms()
    queue = await reader.gauges(now)
    classes = await DeadLetters(client, settings.keys).count_by_class(scan_cap)
    counters = await reader.counters()
    workers = await _workers(client, settings, now)
    portal, breaker, limiter = await _portal_state(client, settings)
    return Status(
        stream=settings.stream,
        group=settings.group,
        dead_stream=settings.dead_stream,
        queue=queue,
        dead_letter_by_class=classes.counts,
        dead_letter_scanned=classes.scanned,
        dead_letter_scan_cap=scan_cap,
        counters=counters,
        workers=workers,
        portal=portal,
        breaker=breaker,
        limiter=limiter,
        mapping=await mapping_counts(settings.database_url, table=table),
    )
