"""``enqueue(..., replicas=1)``: the producer learns whether a replica has its entry (WAIT on the connection
that wrote it), so an entry cannot vanish in a failover unnoticed; async and sync, on the Cluster and on a
single server without replicas."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from harness import Bench
from scripts.local_cluster import LocalCluster

from bitrix_worker.errors import NotReplicated
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.producer import build_operation, enqueue, enqueue_many
from bitrix_worker.sync_producer import enqueue_many_sync, enqueue_sync

OP = build_operation(OpKind("create"), Entity("deal"), "r-1", {"TITLE": "x"}, None)


async def test_entries_confirmed_by_a_replica_on_the_cluster(
    cluster_bench: Bench, local_cluster: LocalCluster
) -> None:
    stream = cluster_bench.settings.stream
    client = cluster_bench.redis
    plain = await enqueue(client, OP, stream=stream, replicas=1)  # type: ignore[arg-type]
    once = await enqueue(client, OP, stream=stream, op_id="r-1:1", replicas=1)  # type: ignore[arg-type]
    assert await enqueue(client, OP, stream=stream, op_id="r-1:1", replicas=1) == once  # type: ignore[arg-type]
    many = await enqueue_many(client, [OP, OP], stream=stream, replicas=1)  # type: ignore[arg-type]
    host, port = local_cluster.seed
    with redis.RedisCluster(host=host, port=port) as sync:
        sync_ids = [
            enqueue_sync(sync, OP, stream=stream, replicas=1),
            enqueue_sync(sync, OP, stream=stream, op_id="r-1:2", replicas=1),
            *enqueue_many_sync(sync, [OP], stream=stream, replicas=1),
        ]
    ids = {i.decode() for i, _ in await client.xrange(stream)}
    assert ids == {plain, once, *many, *sync_ids}


async def test_a_single_server_without_replicas_says_not_replicated(redis_url: str) -> None:
    stream = f"test:{uuid.uuid4().hex[:10]}:ops"
    client = aioredis.Redis.from_url(redis_url)
    try:
        with pytest.raises(NotReplicated, match="0 of 5 replica"):
            await enqueue(client, OP, stream=stream, op_id="n-1", replicas=5, replica_timeout_s=0.05)
        (first,) = await client.xrange(stream)  # it is on the primary: enqueue again with the same op_id
        with pytest.raises(NotReplicated):
            await enqueue(client, OP, stream=stream, op_id="n-1", replicas=5, replica_timeout_s=0.05)
        assert len(await client.xrange(stream)) == 1  # the retry added nothing
        assert first[0]
        with redis.Redis.from_url(redis_url) as sync, pytest.raises(NotReplicated):
            enqueue_sync(sync, OP, stream=stream, replicas=5, replica_timeout_s=0.05)
        with pytest.raises(ValueError, match="replica_timeout_s"):
            await enqueue(client, OP, stream=stream, replicas=1, replica_timeout_s=0)
    finally:
        await client.delete(stream, f"{{{stream}}}:dedupe:n-1")
        await client.aclose()


def test_a_primary_whose_replica_is_down_says_not_replicated(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    stream = f"ct:{uuid.uuid4().hex[:10]}:ops"
    own_cluster.kill(own_cluster.replica_of(own_cluster.primary_of(stream)))
    host, port = own_cluster.seed
    with redis.RedisCluster(host=host, port=port) as sync:
        with pytest.raises(NotReplicated, match="0 of 1 replica"):
            enqueue_sync(sync, OP, stream=stream, replicas=1, replica_timeout_s=0.2)
        assert enqueue_sync(sync, OP, stream=stream)  # without replicas: written, nothing asked
