"""The Python producer API, synchronous, for Django, Flask, Celery tasks or scripts (redis-py's sync client).

Same wire format, validation and ``op_id`` deduplication as the async ``producer`` (see its docstring):

    import redis
    from bitrix_worker import build_operation, enqueue_sync

    r = redis.Redis.from_url("redis://localhost:6379/0")
    enqueue_sync(r, build_operation("update", "deal", "order-42", {"STAGE_ID": "WON"}, 7), op_id="order-42:7")
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from .defaults import DEDUPE_WINDOW_S, STREAM
from .errors import StoreError
from .operations import PAYLOAD_FIELD, Operation, encode_operation
from .producer import ENQUEUE_SCRIPT, dedupe_args, text


def enqueue_sync(
    client: Redis,
    operation: Operation,
    *,
    stream: str = STREAM,
    op_id: str | None = None,
    dedupe_window_s: float = DEDUPE_WINDOW_S,
) -> str:
    """Append one operation; returns its stream id (with ``op_id``: the first one's, for a duplicate)."""
    try:
        if op_id is None:
            return text(client.xadd(stream, {PAYLOAD_FIELD: encode_operation(operation)}))
        keys, args = dedupe_args(stream, operation, op_id, dedupe_window_s)
        _, stream_id = client.register_script(ENQUEUE_SCRIPT)(keys=keys, args=args)
    except RedisError as exc:
        raise StoreError(f"enqueue failed: {exc}") from exc
    return text(stream_id)


def enqueue_many_sync(client: Redis, operations: Iterable[Operation], *, stream: str = STREAM) -> list[str]:
    """Append many operations in one round trip (order preserved)."""
    try:
        with client.pipeline(transaction=False) as pipe:
            for operation in operations:
                pipe.xadd(stream, {PAYLOAD_FIELD: encode_operation(operation)})
            ids: Sequence[Any] = pipe.execute()
    except RedisError as exc:
        raise StoreError(f"enqueue failed: {exc}") from exc
    return [text(i) for i in ids]
