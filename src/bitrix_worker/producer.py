"""The Python producer API: ``await enqueue(redis, op)``. Other languages just XADD the same JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .defaults import STREAM
from .errors import StoreError
from .operations import PAYLOAD_FIELD, Entity, Operation, OpKind, encode_operation


def build_operation(
    op: OpKind | str,
    entity: Entity | str,
    key: str,
    fields: Mapping[str, Any] | None = None,
    version: int | None = None,
) -> Operation:
    """Validate like the worker will; raises pydantic.ValidationError on bad input."""
    return Operation(
        op=OpKind(op), entity=Entity(entity), key=key, fields=dict(fields or {}), version=version
    )


async def enqueue(client: Redis, operation: Operation, *, stream: str = STREAM) -> str:
    """Append one operation; returns its stream id."""
    try:
        raw = await client.xadd(stream, {PAYLOAD_FIELD: encode_operation(operation)})
    except RedisError as exc:
        raise StoreError(f"enqueue failed: {exc}") from exc
    return raw.decode() if isinstance(raw, bytes) else str(raw)


async def enqueue_many(client: Redis, operations: Iterable[Operation], *, stream: str = STREAM) -> list[str]:
    """Append many operations in one round trip (order preserved)."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            for operation in operations:
                pipe.xadd(stream, {PAYLOAD_FIELD: encode_operation(operation)})
            ids = await pipe.execute()
    except RedisError as exc:
        raise StoreError(f"enqueue failed: {exc}") from exc
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
