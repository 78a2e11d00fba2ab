"""One read of what an operator asks first: is it keeping up, is anything stuck, is Bitrix24 refusing us.

Times are measured on the Redis server's clock (``TIME``), the same clock that stamps stream ids and the
retry schedule, so the ages are right even when this host's clock is off. Reads only; nothing is changed.
The dead-letter class breakdown scans the stream and stops after ``SCAN_CAP`` entries (and says so).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from .config import Settings
from .errors import BitrixWorkerError, StoreError
from .limits import Breaker, Limiter
from .mapping import MappingStore
from .redis.deadletter import SCAN_CAP, DeadLetters

LIVE_HEARTBEATS = 3
"""A worker is live while its last heartbeat is younger than this many heartbeat intervals."""


def heartbeat_interval_s(settings: Settings) -> float:
    """The worker's heartbeat period (it follows the reclaim idle time; see worker.run)."""
    return max(0.05, settings.claim_idle_ms / 3000)


def safe_redis_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


@asynccontextmanager
async def redis_connection(url: str, *, timeout_s: float = 3.0) -> AsyncIterator[Redis]:
    """A client that has answered PING; StoreError (one readable line) when Redis is not there."""
    client = Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s * 2)
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            raise StoreError(f"cannot connect to Redis at REDIS_URL ({safe_redis_url(url)}): {exc}") from None
        yield client
    finally:
        await client.aclose()


async def server_ms(client: Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _id_ms(stream_id: Any) -> int:
    text = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
    return int(text.split("-", 1)[0])


@dataclass(slots=True)
class QueueGauges:
    """The cheap numbers (a handful of O(1)/O(log n) reads): what /metrics refreshes on every scrape."""

    stream_length: int = 0
    pending: int = 0
    pending_by_consumer: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_s: float | None = None
    lag_s: float | None = None  # age of the oldest entry still in the stream (unread or pending)
    scheduled: int = 0
    next_due_in_s: float | None = None
    dead_letter_size: int = 0
    group_exists: bool = True


async def queue_gauges(client: Redis, settings: Settings, now_ms: int | None = None) -> QueueGauges:
    keys = settings.keys
    try:
        now = now_ms if now_ms is not None else await server_ms(client)
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(keys.stream)
            pipe.xrange(keys.stream, "-", "+", count=1)
            pipe.zcard(keys.schedule)
            pipe.zrange(keys.schedule, 0, 0, withscores=True)
            pipe.xlen(keys.dead)
            pipe.xpending(keys.stream, settings.group)
            length, first, scheduled, due, dead, pending = await pipe.execute(raise_on_error=False)
    except RedisError as exc:
        raise StoreError(f"status read failed: {exc}") from exc
    for value in (length, first, scheduled, due, dead):
        if isinstance(value, Exception):
            raise StoreError(f"status read failed: {value}")
    g = QueueGauges(int(length), scheduled=int(scheduled), dead_letter_size=int(dead))
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
            _decode(c["name"]): int(c["pending"]) for c in pending.get("consumers") or []
        }
        if g.pending and pending.get("min"):
            g.oldest_pending_age_s = max(0.0, (now - _id_ms(pending["min"])) / 1000)
    return g


def _decode(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


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


async def _workers(client: Redis, settings: Settings, now: int) -> list[dict[str, Any]]:
    window_ms = LIVE_HEARTBEATS * heartbeat_interval_s(settings) * 1000
    raw = await client.hgetall(settings.keys.workers)
    rows = []
    for name, seen in sorted(raw.items()):
        age_ms = max(0, now - int(seen))
        rows.append(
            {"consumer": _decode(name), "last_seen_s": round(age_ms / 1000, 1), "live": age_ms <= window_ms}
        )
    return rows


async def _portal_state(
    client: Redis, settings: Settings
) -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
    try:
        portal = settings.webhook.portal
    except BitrixWorkerError:
        return None, None, None  # no webhook configured: we cannot name the portal's keys
    keys = settings.keys
    breaker = await Breaker(
        client, keys.breaker(portal), cooldown_s=settings.breaker_cooldown_s,
        max_cooldown_s=settings.breaker_max_cooldown_s,
    ).state()  # fmt: skip
    limiter = await Limiter(
        client, keys.limiter(portal), rate_per_s=settings.rate_per_s, burst=settings.rate_burst,
        safety=settings.rate_fraction,
    ).state()  # fmt: skip
    return (
        portal,
        asdict(breaker),
        {"factor": round(limiter.factor, 3), "backlog_s": round(limiter.backlog_s, 3)},
    )


async def mapping_counts(database_url: str) -> dict[str, Any]:
    """Rows per state in the mapping store; a missing SQLite file is reported, never created."""
    if database_url.startswith("sqlite") and ":///" in database_url:
        path = database_url.split(":///", 1)[1]
        if path and path != ":memory:" and not Path(path).exists():  # noqa: ASYNC240 - one stat call
            return {"active": 0, "deleted": 0, "note": f"{path} does not exist yet"}
    try:
        store = await MappingStore.connect(database_url)
    except StoreError as exc:
        return {"error": str(exc)}
    try:
        return {"active": await store.count("active"), "deleted": await store.count("deleted")}
    except StoreError as exc:
        return {"error": str(exc)}
    finally:
        await store.close()


async def gather_status(client: Redis, settings: Settings, *, scan_cap: int = SCAN_CAP) -> Status:
    """Everything ``bitrix-worker status`` shows. Redis failures raise StoreError."""
    try:
        now = await server_ms(client)
        queue = await queue_gauges(client, settings, now)
        classes = await DeadLetters(client, settings.keys).count_by_class(scan_cap)
        counters = {_decode(k): int(v) for k, v in (await client.hgetall(settings.keys.counters)).items()}
        workers = await _workers(client, settings, now)
        portal, breaker, limiter = await _portal_state(client, settings)
    except RedisError as exc:
        raise StoreError(f"status read failed: {exc}") from exc
    return Status(
        stream=settings.stream,
        group=settings.group,
        dead_stream=settings.dead_stream,
        queue=queue,
        dead_letter_by_class=classes.counts,
        dead_letter_scanned=classes.scanned,
        dead_letter_scan_cap=scan_cap,
        counters=dict(sorted(counters.items())),
        workers=workers,
        portal=portal,
        breaker=breaker,
        limiter=limiter,
        mapping=await mapping_counts(settings.database_url),
    )
