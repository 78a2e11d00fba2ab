"""Appending operations to the stream: one XADD per operation, many in one round trip.

With ``replicas`` > 0 the appends are followed, on the same connection (one pipeline to the node holding the
stream), by ``WAIT replicas timeout``: Redis replicates asynchronously, and a primary that fails right after
acknowledging an XADD loses it if no replica had it yet. WAIT says how many replicas have every write this
connection made; fewer than asked raises ``NotReplicated`` (the entry may or may not survive a failover:
enqueue again with the same ``op_id`` and the duplicate is dropped).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import RedisCluster

from ..errors import NotReplicated
from ..values import PAYLOAD_FIELD, as_text
from .connection import RedisClient
from .errors import translated
from .scripts import load_source, register


def check_replicated(acknowledged: Any, replicas: int, timeout_ms: int) -> None:
    if int(acknowledged) < replicas:
        raise NotReplicated(
            f"written to the primary, but {int(acknowledged)} of {replicas} replica(s) confirmed it within "
            f"{timeout_ms} ms: it may be lost if the primary fails now; enqueue again with the same op_id "
            "(a duplicate is dropped)"
        )


async def _pipeline(
    client: RedisClient, stream: str, commands: list[tuple[Any, ...]], replicas: int, timeout_ms: int
) -> list[Any]:
    """Run ``commands`` in one pipeline; with ``replicas``, WAIT on the stream's node after them."""
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        if replicas > 0:
            if isinstance(client, RedisCluster):
                await client.initialize()
                node = client.get_node_from_key(stream)
                pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
            else:
                pipe.execute_command("WAIT", replicas, timeout_ms)
        results = list(await pipe.execute())
    if replicas > 0:
        check_replicated(results.pop(), replicas, timeout_ms)
    return results


async def append_payloads(
    client: RedisClient, stream: str, payloads: Iterable[str], *, replicas: int = 0, timeout_ms: int = 1000
) -> list[str]:
    """XADD each payload (in order, one pipeline); returns the new stream ids."""
    commands = [("XADD", stream, "*", PAYLOAD_FIELD, payload) for payload in payloads]
    with translated("enqueue"):
        ids = await _pipeline(client, stream, commands, replicas, timeout_ms)
    return [as_text(i) for i in ids]


async def note_portal(client: RedisClient, index: str, portal: str) -> None:
    """Add ``portal`` to the set of portals with a stream, before its first entry is added: the multi-portal
    worker reads it to find streams of portals it does not know (and dead-letters what they hold)."""
    with translated("enqueue"):
        await client.sadd(index, portal)


async def portal_ids(client: RedisClient, index: str) -> set[str]:
    """The portals noted by ``note_portal``."""
    with translated("portal list"):
        members = await client.smembers(index)
    return {as_text(m) for m in members}


async def append_entries(client: RedisClient, stream: str, entries: Iterable[dict[str, str]]) -> list[str]:
    """XADD entries with arbitrary fields (a producer's raw entries: tests and the demo's bad input)."""
    with translated("enqueue"):
        async with client.pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(stream, fields)  # type: ignore[arg-type]
            ids = await pipe.execute()
    return [as_text(i) for i in ids]


async def append_once(
    client: RedisClient, keys: list[str], args: list[Any], *, replicas: int = 0, timeout_ms: int = 1000
) -> str:
    """``enqueue.lua``: append unless the op_id was enqueued within its window; the (first) stream id.

    With ``replicas`` the script goes as EVAL in the WAIT's pipeline (a Cluster pipeline loads no scripts).
    """
    with translated("enqueue"):
        if replicas > 0:
            command = ("EVAL", load_source("enqueue"), len(keys), *keys, *args)
            ((_, stream_id),) = await _pipeline(client, keys[0], [command], replicas, timeout_ms)
        else:
            _, stream_id = await register(client, "enqueue")(keys=keys, args=args)
    return as_text(stream_id)
