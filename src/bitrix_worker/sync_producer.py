"""The Python producer API, synchronous, for Django, Flask, Celery tasks or scripts (redis-py's sync client).

Same wire format, validation and ``op_id`` deduplication as the async ``producer`` (see its docstring):

    import redis
    from bitrix_worker import build_operation, enqueue_sync

    r = redis.Redis.from_url("redis://localhost:6379/0")
    enqueue_sync(r, build_operation("update", "deal", "order-42", {"STAGE_ID": "WON"}, 7), op_id="order-42:7")
"""

from __future__ import annotations

from collections.abc import Iterable

from .defaults import DEAD_STREAM, DEDUPE_WINDOW_S, REPLICA_TIMEOUT_S, STREAM, StreamKeys
from .operations import Operation, encode_operation
from .portal_layout import portal_stream
from .producer import dedupe_args, for_portal, replica_timeout_ms
from .redis.sync_producing import SyncRedisClient, append_once_sync, append_payloads_sync, note_portal_sync


def _target(client: SyncRedisClient, stream: str, portal: str | None, default_portal: str | None) -> str:
    """``producer.portal_target`` for the sync client."""
    target = portal_stream(stream, portal, default_portal)
    if portal is not None and target != stream:
        note_portal_sync(client, StreamKeys(stream=stream, dead=DEAD_STREAM).portals, portal)
    return target


def enqueue_sync(
    client: SyncRedisClient,
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
    ``portal``, ``default_portal``: as for ``producer.enqueue``."""
    operation = for_portal(operation, portal)
    stream = _target(client, stream, portal, default_portal)
    wait = {"replicas": replicas, "timeout_ms": replica_timeout_ms(replicas, replica_timeout_s)}
    if op_id is None:
        (stream_id,) = append_payloads_sync(client, stream, [encode_operation(operation)], **wait)
        return stream_id
    keys, args = dedupe_args(stream, operation, op_id, dedupe_window_s)
    return append_once_sync(client, keys, args, **wait)


def enqueue_many_sync(
    client: SyncRedisClient,
    operations: Iterable[Operation],
    *,
    stream: str = STREAM,
    replicas: int = 0,
    replica_timeout_s: float = REPLICA_TIMEOUT_S,
    portal: str | None = None,
    default_portal: str | None = None,
) -> list[str]:
    """Append many operations in one round trip (order preserved); ``replicas`` and ``portal`` as for
    ``enqueue_sync`` (one portal for them all)."""
    ops = [for_portal(o, portal) for o in operations]
    return append_payloads_sync(
        client,
        _target(client, stream, portal, default_portal),
        (encode_operation(o) for o in ops),
        replicas=replicas,
        timeout_ms=replica_timeout_ms(replicas, replica_timeout_s),
    )
