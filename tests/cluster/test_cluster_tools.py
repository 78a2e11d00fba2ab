"""What else speaks to Redis, on a real Redis Cluster: the producers (async and sync, with op_id
deduplication), dead-letter replay, key lookup and the dashboard's pages."""

from __future__ import annotations

import json
import socket

import httpx
import redis
from harness import Bench
from scripts.local_cluster import LocalCluster

from bitrix_worker.dashboard import create_app
from bitrix_worker.keylookup import lookup
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.producer import build_operation, enqueue
from bitrix_worker.redis.connection import redis_connection
from bitrix_worker.redis.deadletter import DeadLetters
from bitrix_worker.sync_producer import enqueue_many_sync, enqueue_sync


async def test_producers_dedupe_and_the_sync_client_work_on_the_cluster(
    cluster_bench: Bench, local_cluster: LocalCluster
) -> None:
    bench = cluster_bench
    stream = bench.settings.stream
    op = build_operation(OpKind("create"), Entity("deal"), "d-1", {"TITLE": "one"}, None)
    first = await enqueue(bench.redis, op, stream=stream, op_id="order-1:1")  # type: ignore[arg-type]
    again = await enqueue(bench.redis, op, stream=stream, op_id="order-1:1")  # type: ignore[arg-type]
    assert first == again  # enqueue.lua: the stream and the op_id's key share the stream's slot
    host, port = local_cluster.seed
    with redis.RedisCluster(host=host, port=port) as sync:
        sync_op = build_operation(OpKind("create"), Entity("deal"), "d-2", {"TITLE": "two"}, None)
        one = enqueue_sync(sync, sync_op, stream=stream, op_id="order-2:1")
        assert enqueue_sync(sync, sync_op, stream=stream, op_id="order-2:1") == one
        more = [
            build_operation(OpKind("create"), Entity("deal"), f"m-{i}", {"TITLE": "m"}, None)
            for i in range(5)
        ]
        assert len(enqueue_many_sync(sync, more, stream=stream)) == 5
    summary = await bench.run()
    assert dict(summary.outcomes) == {"applied": 7}
    assert sorted(d["ORIGIN_ID"] for d in await bench.entities()) == [
        "d-1",
        "d-2",
        *(f"m-{i}" for i in range(5)),
    ]


async def test_a_dead_letter_looked_up_and_replayed_on_the_cluster_is_applied(cluster_bench: Bench) -> None:
    bench = cluster_bench.with_settings(retries_invalid_data=0)
    await bench.admin.set_faults(rules=[{"method": "crm.deal.add", "kind": "invalid"}])
    origin = await bench.enqueue("create", "r-1", {"TITLE": "replayed"})
    await bench.run()
    report = await lookup(bench.redis, bench.settings, "deal", "r-1")  # type: ignore[arg-type]
    (found,) = report.dead_letters
    assert found.error["stream_id"] == origin
    dead = DeadLetters(bench.redis, bench.settings.keys)  # type: ignore[arg-type]
    (entry,) = await dead.entries()
    await bench.admin.clear_faults()
    replayed = await dead.replay([entry], rate_per_s=0)  # replay.lua: dead stream -> stream, one slot
    assert len(replayed.replayed) == 1
    await bench.run()
    assert [d["TITLE"] for d in await bench.entities()] == ["replayed"]
    assert await dead.size() == 0


async def test_dashboard_pages_read_the_cluster(cluster_bench: Bench) -> None:
    bench = cluster_bench
    await bench.enqueue("create", "page-1", {"TITLE": "x"})
    await bench.enqueue_raw({"payload": "[]"})
    await bench.run()
    transport = httpx.ASGITransport(app=create_app(bench.settings, redis=bench.redis))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        for path in ("/", "/live", "/dead", "/find?q=page-1"):
            page = await client.get(path)
            assert page.status_code == 200, (path, page.text[:500])
        assert "page-1" in (await client.get("/find?q=page-1")).text
    assert (
        json.loads((await bench.redis.xrange(bench.settings.dead_stream))[0][1][b"payload"] or b"null") == []
    )


async def test_a_down_seed_node_is_skipped_for_the_next_one(local_cluster: LocalCluster) -> None:
    with socket.socket() as s:  # a port nobody listens on: the first seed is "down"
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    host, port = local_cluster.seed
    url = f"redis+cluster://127.0.0.1:{dead},{host}:{port}"
    async with redis_connection(url) as client:
        assert await client.set("{seed-test}:k", "1")
        assert await client.delete("{seed-test}:k") == 1
