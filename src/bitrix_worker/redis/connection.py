"""Opening Redis connections: the worker's long-lived client and the CLI's short checked one.

``RedisClient`` is the type the rest of the package names in signatures, so that only ``redis/`` imports
redis-py. Connection failures become ``StoreError`` with the URL's password hidden.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..errors import StoreError
from ..redaction import redact_url

RedisClient = Redis
"""The asyncio client every Redis-backed class takes (redis-py's ``redis.asyncio.Redis``)."""


def safe_redis_url(url: str) -> str:
    """The URL without its password or tokens, for messages (``redaction.redact_url``)."""
    return redact_url(url)


def client_for(url: str, *, name: str | None = None, timeout_s: float | None = None) -> Redis:
    """A client that has not connected yet. ``name`` shows in CLIENT LIST; ``timeout_s`` bounds connect
    and each command (the CLI's short checks), None leaves them unbounded (the worker's blocking reads)."""
    if timeout_s is None:
        return Redis.from_url(url, health_check_interval=30, socket_keepalive=True, client_name=name)
    return Redis.from_url(
        url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s * 2, client_name=name
    )


async def ping_or_fail(client: Redis, url: str) -> None:
    """PING; on failure close the client and raise StoreError (one readable line)."""
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise StoreError(f"cannot connect to Redis at REDIS_URL ({safe_redis_url(url)}): {exc}") from None


async def answers(url: str, *, timeout_s: float = 1.0) -> bool:
    """Whether a Redis server answers PING at ``url`` (the demo's backend choice)."""
    client = client_for(url, timeout_s=timeout_s)
    try:
        await client.ping()
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()
    return True


@asynccontextmanager
async def redis_connection(
    url: str, *, timeout_s: float = 3.0, name: str | None = None
) -> AsyncIterator[Redis]:
    """A client that has answered PING, closed on exit; StoreError when Redis is not there."""
    client = client_for(url, name=name, timeout_s=timeout_s)
    await ping_or_fail(client, url)
    try:
        yield client
    finally:
        await client.aclose()
