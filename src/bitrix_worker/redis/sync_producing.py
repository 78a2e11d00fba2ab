"""The synchronous twin of ``producing`` for producers without an event loop (Django, Flask, Celery tasks):
redis-py's sync client, the same XADDs, the same ``enqueue.lua`` and the same optional WAIT."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import Redis, RedisCluster

from ..values import PAYLOAD_FIELD, as_text
from .errors import translated
from .producing import check_replicated
from .scripts import load_source

SyncRedisClient = Redis | RedisCluster
"""The sync client the sync producer takes (redis-py's ``redis.Redis``, or ``redis.RedisCluster``)."""


def _pipeline(
    client: SyncRedisClient, stream: str, commands: list[tuple[Any, ...]], replicas: int, timeout_ms: int
) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        if replicas > 0:
            if isinstance(client, RedisCluster):
                node = client.get_node_from_key(stream)  # type: ignore[no-untyped-call]
                pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
            else:
                pipe.execute_command("WAIT", replicas, timeout_ms)
        results = list(pipe.execute())
    if replicas > 0:
        check_replicated(results.pop(), replicas, timeout_ms)
    return results


def note_portal_sync(client: SyncRedisClient, index: str, portal: str) -> None:
    """``producing.note_portal`` for the sync client."""
    with translated("enqueue"):
        client.sadd(index, portal)


def append_payloads_sync(
    client: SyncRedisClient,
    stream: str,
    payloads: Iterable[str],
    *,
    replicas: int = 0,
    timeout_ms: int = 1000,
) -> list[str]:
    commands = [("XADD", stream, "*", PAYLOAD_FIELD, payload) for payload in payloads]
    with translated("enqueue"):
        ids = _pipeline(client, stream, commands, replicas, timeout_ms)
    return [as_text(i) for i in ids]


def append_once_sync(
    client: SyncRedisClient, keys: list[str], args: list[Any], *, replicas: int = 0, timeout_ms: int = 1000
) -> str:
    with translated("enqueue"):
        if replicas > 0:
            command = ("EVAL", load_source("enqueue"), len(keys), *keys, *args)
            ((_, stream_id),) = _pipeline(client, keys[0], [command], replicas, timeout_ms)
        else:
            _, stream_id = client.register_script(load_source("enqueue"))(keys=keys, args=args)
    return as_text(stream_id)
