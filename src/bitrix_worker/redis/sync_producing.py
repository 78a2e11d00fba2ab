"""The synchronous twin of ``producing`` for producers without an event loop (Django, Flask, Celery tasks):
redis-py's sync client, the same XADDs and the same ``enqueue.lua``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis import Redis, RedisCluster

from ..values import PAYLOAD_FIELD, as_text
from .errors import translated
from .scripts import load_source

SyncRedisClient = Redis | RedisCluster
"""The sync client the sync producer takes (redis-py's ``redis.Redis``, or ``redis.RedisCluster``)."""


def append_payloads_sync(client: SyncRedisClient, stream: str, payloads: Iterable[str]) -> list[str]:
    with translated("enqueue"), client.pipeline(transaction=False) as pipe:
        for payload in payloads:
            pipe.xadd(stream, {PAYLOAD_FIELD: payload})
        ids = pipe.execute()
    return [as_text(i) for i in ids]


def append_once_sync(client: SyncRedisClient, keys: list[str], args: list[Any]) -> str:
    with translated("enqueue"):
        _, stream_id = client.register_script(load_source("enqueue"))(keys=keys, args=args)
    return as_text(stream_id)
