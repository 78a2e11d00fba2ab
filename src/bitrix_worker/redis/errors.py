"""Redis errors become ``StoreError`` here, once, with what was being done: the rest of the package never
sees a redis-py exception (the same job ``mapping.py`` does for SQLAlchemy)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

from ..errors import StoreError


@contextmanager
def translated(what: str) -> Iterator[None]:
    """``with translated("claim"):`` turns a RedisError (or a dropped socket) into ``StoreError("claim
    failed: ...")`` chained to the original, so callers handle one exception type."""
    try:
        yield
    except RedisError as exc:
        raise StoreError(f"{what} failed: {exc}") from exc
