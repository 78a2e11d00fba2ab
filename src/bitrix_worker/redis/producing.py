"""Appending operations to the stream: one XADD per operation, many in one round trip."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..values import PAYLOAD_FIELD, as_text
from .connection import RedisClient
from .errors import translated
from .scripts import register


async def append_payloads(client: RedisClient, stream: str, payloads: Iterable[str]) -> list[str]:
    """XADD each payload (in order, one pipeline); returns the new stream ids."""
    with translated("enqueue"):
        async with client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.xadd(stream, {PAYLOAD_FIELD: payload})
            ids = await pipe.execute()
    return [as_text(i) for i in ids]


async def append_entries(client: RedisClient, stream: str, entries: Iterable[dict[str, str]]) -> list[str]:
    """XADD entries with arbitrary fields (a producer's raw entries: tests and the demo's bad input)."""
    with translated("enqueue"):
        async with client.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            ids = await pipe.execute()
    return [as_text(i) for i in ids]


async def append_once(client: RedisClient, keys: list[str], args: list[Any]) -> str:
    """``enqueue.lua``: append unless the op_id was enqueued within its window; the (first) stream id."""
    with translated("enqueue"):
        _, stream_id = await register(client, "enqueue")(keys=keys, args=args)
    return as_text(stream_id)
