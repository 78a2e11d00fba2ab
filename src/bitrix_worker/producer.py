"""The Python producer API: ``await enqueue(redis, op)``. Other languages just XADD the same JSON."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .defaults import STREAM
from .operations import Entity, Operation, OpKind, encode_operation
from .redis.connection import RedisClient
from .redis.producing import append_payloads


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


async def enqueue(client: RedisClient, operation: Operation, *, stream: str = STREAM) -> str:
    """Append one operation; returns its stream id."""
    (stream_id,) = await append_payloads(client, stream, [encode_operation(operation)])
    return stream_id


async def enqueue_many(
    client: RedisClient, operations: Iterable[Operation], *, stream: str = STREAM
) -> list[str]:
    """Append many operations in one round trip (order preserved)."""
    return await append_payloads(client, stream, (encode_operation(o) for o in operations))
