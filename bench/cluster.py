"""What Redis Cluster costs a producer: an enqueue with and without ``replicas=1`` (WAIT for one replica),
and how long a primary's failover keeps enqueues from landing. Starts its own 6-node Cluster on loopback
(``scripts/local_cluster.py``; needs ``redis-server`` and ``redis-cli``) and stops it afterwards.

    python -m bench.cluster            # ~30 s; prints a Markdown table (docs/scaling.md, "Redis Cluster")
"""

from __future__ import annotations

import asyncio
import platform
import statistics
import tempfile
import time
from pathlib import Path

from redis.asyncio import RedisCluster
from scripts.local_cluster import LocalCluster, missing_binaries

from bitrix_worker.errors import NotReplicated, StoreError
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.producer import build_operation, enqueue, enqueue_many

ROUNDS = 5
SINGLE = 500
BATCHES = 20
BATCH = 100
OP = build_operation(OpKind("create"), Entity("deal"), "b-1", {"TITLE": "bench"}, None)


async def _per_call_ms(client: RedisCluster, stream: str, replicas: int, *, op_id: bool) -> float:
    started = time.perf_counter()
    for i in range(SINGLE):
        await enqueue(client, OP, stream=stream, op_id=f"b-{i}" if op_id else None, replicas=replicas)
    return (time.perf_counter() - started) / SINGLE * 1000


async def _per_batch_ms(client: RedisCluster, stream: str, replicas: int) -> float:
    started = time.perf_counter()
    for _ in range(BATCHES):
        await enqueue_many(client, [OP] * BATCH, stream=stream, replicas=replicas)
    return (time.perf_counter() - started) / BATCHES * 1000


async def _failover_gap_s(cluster: LocalCluster, client: RedisCluster, stream: str) -> float:
    """Kill the stream's primary (SIGKILL) mid-loop; the longest time between two enqueues that reached a
    primary. (After the failover the new primary has no replica until the old one comes back: until then
    ``replicas=1`` says NotReplicated, which the loop counts as reached.)"""
    last_ok, gap, killed_at = time.monotonic(), 0.0, None
    for i in range(100_000):
        if i == 200:
            cluster.kill(cluster.primary_of(stream))
            killed_at = time.monotonic()
        try:
            await enqueue(client, OP, stream=stream, op_id=f"f-{i}", replicas=1, replica_timeout_s=0.05)
        except NotReplicated:
            pass
        except StoreError:  # the primary is gone, its replica not yet promoted: retry
            await asyncio.sleep(0.02)
            continue
        now = time.monotonic()
        gap, last_ok = max(gap, now - last_ok), now
        if killed_at is not None and now - killed_at > gap + 1.0:
            break
    return gap


async def main() -> None:
    why = missing_binaries()
    if why:
        raise SystemExit(f"cannot start a local Redis Cluster: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp))
        cluster.start()
        try:
            host, port = cluster.seed
            client = RedisCluster(host=host, port=port)
            samples: dict[tuple[int, str], list[float]] = {}
            for r in range(
                ROUNDS + 1
            ):  # alternated rounds, medians: the machine may be busy; round 0 warms up
                for replicas in (0, 1):
                    measured = {
                        "single": await _per_call_ms(client, f"bench:{replicas}:a", replicas, op_id=False),
                        "op_id": await _per_call_ms(client, f"bench:{replicas}:b", replicas, op_id=True),
                        "batch": await _per_batch_ms(client, f"bench:{replicas}:c", replicas),
                    }
                    for kind, value in measured.items():
                        if r:
                            samples.setdefault((replicas, kind), []).append(value)
            rows = [
                (
                    replicas,
                    *(statistics.median(samples[replicas, kind]) for kind in ("single", "op_id", "batch")),
                )
                for replicas in (0, 1)
            ]
            gap = await _failover_gap_s(cluster, client, "bench:failover")
            await client.aclose()
        finally:
            cluster.stop()
    where = f"Python {platform.python_version()}, {platform.machine()}"
    print(f"Redis Cluster on loopback, 3 primaries + 3 replicas ({where})")
    print()
    print(f"Medians of {ROUNDS} rounds ({SINGLE} enqueues, {BATCHES} batches each)")
    print()
    print(f"| replicas | enqueue (ms) | enqueue with op_id (ms) | enqueue_many of {BATCH} (ms) |")
    print("|---|---|---|---|")
    for replicas, single, once, batch in rows:
        print(f"| {replicas} | {single:.3f} | {once:.3f} | {batch:.2f} |")
    print()
    print(f"primary killed (SIGKILL), cluster-node-timeout 1000 ms: no enqueue landed for {gap:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
