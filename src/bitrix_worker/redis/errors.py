"""Redis errors become ``StoreError`` here, once, with what was being done: the rest of the package never
sees a redis-py exception (the same job ``mapping.py`` does for SQLAlchemy)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisClusterException, RedisError

from ..errors import StoreError


@contextmanager
def translated(what: str) -> Iterator[None]:
    """``with translated("claim"):`` turns a RedisError (or a dropped socket) into ``StoreError("claim
    failed: ...")`` chained to the original, so callers handle one exception type. A Cluster client's own
    errors (no node reachable, a slot not covered while a replica is being promoted) are not RedisErrors in
    redis-py: they are translated too, so a failover reads like any other Redis outage."""
    try:
        yield
    except (RedisError, RedisClusterException) as exc:
        raise StoreError(f"{what} failed: {exc}") from exc
