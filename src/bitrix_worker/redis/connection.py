"""Opening Redis connections: the worker's long-lived client and the CLI's short checked one.

``RedisClient`` is the type the rest of the package names in signatures, so that only ``redis/`` imports
redis-py. Connection failures become ``StoreError`` with the URL's password hidden.

A ``redis+cluster://`` (or ``rediss+cluster://``) URL opens redis-py's ``RedisCluster`` instead of a
single-server client: the URL names one or more seed nodes (``h1:p1,h2:p2``), the client learns the others
(and follows failovers) from the Cluster itself. Every key of a stream shares the stream's hash slot
(``defaults.StreamKeys``), so each script and MULTI runs on one node; ``check_cluster_layout`` refuses a
dead-letter stream outside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from ..defaults import StreamKeys
from ..errors import ConfigError, StoreError
from ..redaction import redact_url
from ..urls import split_cluster_url

RedisClient = Redis | RedisCluster
"""The asyncio client every Redis-backed class takes: redis-py's ``redis.asyncio.Redis``, or its
``RedisCluster`` for a ``redis+cluster://`` URL (both speak every command the package uses)."""

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
CLUSTER_READ_TIMEOUT_S = 75.0
"""A Cluster client's per-command read timeout: above the longest blocking read (``block_ms`` <= 60 s), so
a worker waiting for work is never cut, yet a primary that vanished without a reset (a partition) is
given up on and the client re-reads the Cluster's topology instead of waiting forever."""


def safe_redis_url(url: str) -> str:
    """The URL without its password or tokens, for messages (``redaction.redact_url``)."""
    return redact_url(url)


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def _cluster(url: str, **options: Any) -> RedisCluster:
    """redis-py's ``RedisCluster`` from the first seed's URL, the other seeds as extra startup nodes."""
    first, nodes = split_cluster_url(url)
    others = [
        ClusterNode(p.hostname or "", p.port or 6379) for p in (urlsplit(f"redis://{n}") for n in nodes[1:])
    ]
    return RedisCluster.from_url(first, startup_nodes=others or None, **options)


def client_for(
    url: str, *, name: str | None = None, timeout_s: float | None = None, max_connections: int | None = None
) -> RedisClient:
    """A client that has not connected yet. ``name`` shows in CLIENT LIST; ``timeout_s`` bounds connect
    and each command (the CLI's short checks), None leaves them unbounded (the worker's blocking reads;
    on a Cluster bounded by ``CLUSTER_READ_TIMEOUT_S``); ``max_connections``: the pool's bound (a
    multi-portal worker needs several per portal; redis-py's default is 100)."""
    pool: dict[str, Any] = {} if max_connections is None else {"max_connections": max_connections}
    if is_cluster_url(url):
        read_s = CLUSTER_READ_TIMEOUT_S if timeout_s is None else timeout_s * 2
        return _cluster(
            url,
            client_name=name,
            socket_connect_timeout=timeout_s or 5.0,
            socket_timeout=read_s,
            socket_keepalive=True,
            health_check_interval=30 if timeout_s is None else 0,
            **pool,
        )
    if timeout_s is None:
        return Redis.from_url(url, health_check_interval=30, socket_keepalive=True, client_name=name, **pool)
    return Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s * 2, client_name=name
    )


def check_cluster_layout(url: str, keys: StreamKeys) -> None:
    """On a Cluster, the dead-letter stream must hash to the stream's slot: ``settle.lua`` and
    ``replay.lua`` move entries between the two atomically, which Redis Cluster allows only within one
    slot. ConfigError naming BITRIX_WORKER_DEAD_STREAM otherwise (a single server has no slots: no check)."""
    if not is_cluster_url(url):
        return
    slot = key_slot(keys.stream.encode())
    if key_slot(keys.schedule.encode()) != slot:
        raise ConfigError(
            "BITRIX_WORKER_STREAM",
            f"{keys.stream!r} puts its keys ({keys.schedule!r}) in another Redis Cluster slot than the "
            "stream itself: use a stream name without braces",
        )
    if key_slot(keys.dead.encode()) != slot:
        raise ConfigError(
            "BITRIX_WORKER_DEAD_STREAM",
            f"on a Redis Cluster the dead-letter stream must share the stream's hash slot: set it to "
            f"{{{keys.stream}}}:dead",
        )


async def server_ms(client: RedisClient, key: str) -> int:
    """The Redis server's clock (TIME) in ms, read on the node that holds ``key``: the clock that stamps that
    stream's ids and its retry schedule (on a Cluster each node has its own). Raises redis-py's errors."""
    if isinstance(client, RedisCluster):
        await client.initialize()
        seconds, micros = await client.time(target_nodes=client.get_node_from_key(key))
    else:
        seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def ping_or_fail(client: RedisClient, url: str) -> None:
    """PING; on failure close the client and raise StoreError (one readable line)."""
    try:
        await client.ping()
    except (RedisError, RedisClusterException, OSError) as exc:
        await client.aclose()
        raise StoreError(f"cannot connect to Redis at REDIS_URL ({safe_redis_url(url)}): {exc}") from None


async def answers(url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``url`` (the demo's backend choice)."""
    client = client_for(url, timeout_s=timeout_s)
    try:
        await client.ping()
    except (RedisError, RedisClusterException, OSError):
        return False
    finally:
        await client.aclose()
    return True


@asynccontextmanager
async def redis_connection(
    url: str, *, timeout_s: float = 3.0, name: str | None = None
) -> AsyncIterator[RedisClient]:
    """A client that has answered PING, closed on exit; StoreError when Redis is not there."""
    client = client_for(url, name=name, timeout_s=timeout_s)
    await ping_or_fail(client, url)
    try:
        yield client
    finally:
        await client.aclose()
