"""The Python producer API, async: ``await enqueue(redis, op)``. Other languages just XADD the same JSON;
the sync twin for Django/Flask is ``sync_producer``.

Idempotent enqueue: pass ``op_id`` (your own id for this change, e.g. ``order-42:v7`` or an outbox row id)
and a second enqueue with the same ``op_id`` within ``dedupe_window_s`` adds nothing and returns the first
entry's stream id. One Lua script checks and appends, so two concurrent producers cannot both add it. It is
for a producer that retries after a timeout without knowing whether its XADD landed; the worker stays safe
without it (a repeated create acts as an update, an older ``version`` is skipped), it only saves calls.

Surviving a failover: Redis replicates asynchronously, so an XADD the primary acknowledged can be lost if the
primary dies before a replica has it (Redis Cluster, or a replicated single server). ``replicas=1`` waits
(``WAIT``, at most ``replica_timeout_s``) until a replica has it too, and raises ``NotReplicated`` otherwise:
enqueue again with the same ``op_id`` (docs/scaling.md, "Redis Cluster").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .defaults import DEAD_STREAM, DEDUPE_WINDOW_S, REPLICA_TIMEOUT_S, STREAM, StreamKeys
from .operations import MAX_KEY_LENGTH, Entity, Operation, OpKind, encode_operation
from .portal_layout import portal_stream
from .redis.connection import RedisClient
from .redis.producing import append_once, append_payloads, note_portal


def build_operation(
    op: OpKind | str,
    entity: Entity | str,
    key: str,
    fields: Mapping[str, Any] | None = None,
    version: int | None = None,
    *,
    products: Sequence[Mapping[str, Any]] | None = None,
) -> Operation:
    """Validate like the worker will; raises pydantic.ValidationError (naming the allowed values).

    ``products``: the entity's whole product-row set (``[]`` clears it; None leaves the rows alone)."""
    data: dict[str, Any] = {
        "op": op,
        "entity": entity,
        "key": key,
        "fields": {} if fields is None else fields,
        "version": version,
    }
    if products is not None:
        data["products"] = [dict(row) if isinstance(row, Mapping) else row for row in products]
    return Operation.model_validate(data)


def check_op_id(op_id: str) -> None:
    """ValueError unless ``op_id`` can name a Redis key: 1-200 characters, no control characters."""
    if not op_id or len(op_id) > MAX_KEY_LENGTH or any(ord(ch) < 32 for ch in op_id):
        raise ValueError(f"op_id must be 1-{MAX_KEY_LENGTH} printable characters")


def replica_timeout_ms(replicas: int, timeout_s: float) -> int:
    """WAIT's timeout in ms; ValueError for a negative count or a timeout that is not > 0 (WAIT 0 would
    block forever)."""
    if replicas < 0:
        raise ValueError("replicas must be >= 0")
    if not timeout_s > 0:
        raise ValueError("replica_timeout_s must be > 0")
    return max(1, int(timeout_s * 1000))


def dedupe_args(
    stream: str, operation: Operation, op_id: str, window_s: float
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of ``enqueue.lua``; ValueError for an op_id or window the stream cannot keep."""
    check_op_id(op_id)
    if window_s <= 0:
        raise ValueError("dedupe_window_s must be > 0")
    key = StreamKeys(stream=stream, dead=DEAD_STREAM).dedupe(op_id)
    return [stream, key], [encode_operation(operation), op_id, max(1, int(window_s * 1000))]


def for_portal(operation: Operation, portal: str | None) -> Operation:
    """The operation naming ``portal`` (validated: ValueError for an id that cannot name a stream)."""
    if portal is None:
        return operation
    return Operation.model_validate({**json.loads(encode_operation(operation)), "portal": portal})


async def portal_target(
    client: RedisClient, stream: str, portal: str | None, default_portal: str | None
) -> str:
    """The stream a portal's operations go to: its own (``<stream>:<portal>``, noted in the base stream's
    portal set first), or ``stream`` itself for the default portal and for no portal at all."""
    target = portal_stream(stream, portal, default_portal)
    if portal is not None and target != stream:
        await note_portal(client, StreamKeys(stream=stream, dead=DEAD_STREAM).portals, portal)
    return target


async def enqueue(
    client: RedisClient,
    operation: Operation,
    *,
    stream: str = STREAM,
    op_id: str | None = None,
    dedupe_window_s: float = DEDUPE_WINDOW_S,
    replicas: int = 0,
    replica_timeout_s: float = REPLICA_TIMEOUT_S,
    portal: str | None = None,
    default_portal: str | None = None,
) -> str:
    """Append one operation; returns its stream id (with ``op_id``: the first one's, for a duplicate).
    ``replicas``: also wait until that many replicas have it (``NotReplicated`` if not in time).
    ``portal``: the registry id of the portal it is for; it goes to that portal's stream, except for
    ``default_portal`` (the workers' ``BITRIX_WORKER_PORTAL``), whose operations stay on ``stream``."""
    operation = for_portal(operation, portal)
    stream = await portal_target(client, stream, portal, default_portal)
    wait = {"replicas": replicas, "timeout_ms": replica_timeout_ms(replicas, replica_timeout_s)}
    if op_id is None:
        (stream_id,) = await append_payloads(client, stream, [encode_operation(operation)], **wait)
        return stream_id
    keys, args = dedupe_args(stream, operation, op_id, dedupe_window_s)
    return await append_once(client, keys, args, **wait)


async def enqueue_many(
    client: RedisClient,
    operations: Iterable[Operation],
    *,
    stream: str = STREAM,
    replicas: int = 0,
    replica_timeout_s: float = REPLICA_TIMEOUT_S,
    portal: str | None = None,
    default_portal: str | None = None,
) -> list[str]:
    """Append many operations in one round trip (order preserved); ``replicas`` and ``portal`` as for
    ``enqueue`` (one portal for them all)."""
    ops = [for_portal(o, portal) for o in operations]
    return await append_payloads(
        client,
        await portal_target(client, stream, portal, default_portal),
        (encode_operation(o) for o in ops),
        replicas=replicas,
        timeout_ms=replica_timeout_ms(replicas, replica_timeout_s),
    )
