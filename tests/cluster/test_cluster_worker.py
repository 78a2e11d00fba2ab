"""The worker's core scenarios on a real Redis Cluster (3 primaries + 3 replicas on loopback) against the
emulator: exactly-once creates/updates/deletes in per-key order, retries and dead letters, several worker
processes, streams whose slots live on different primaries, the CLI, and a primary killed mid-run."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from cluster_harness import close_cluster_bench, open_cluster_bench
from harness import WORKER_CMD, Bench, settings_env
from scripts.local_cluster import LocalCluster

from bitrix_worker.worker import Worker


async def wait_for(predicate: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


def start_worker(bench: Bench, log: Path, **overrides: object) -> subprocess.Popen[bytes]:
    """``bitrix-worker run --until-idle`` as a process of its own, on the bench's settings."""
    env = settings_env(bench.settings, **overrides)
    return subprocess.Popen(
        [sys.executable, *WORKER_CMD, "--until-idle"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from bitrix_worker.cli import main; main()", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def assert_each_once(deals: list[dict[str, object]], keys: list[str]) -> None:
    origins = Counter(str(d["ORIGIN_ID"]) for d in deals)
    assert sorted(origins) == sorted(keys)
    assert max(origins.values()) == 1, "a key was created twice"


async def test_operations_apply_once_in_key_order_with_retries_and_dead_letters(cluster_bench: Bench) -> None:
    bench = cluster_bench
    await bench.admin.set_faults(rules=[{"method": "batch", "kind": "503", "max_hits": 2}])
    await bench.enqueue("create", "o-1", {"TITLE": "created"})
    await bench.enqueue("update", "o-1", {"TITLE": "updated"})
    await bench.enqueue("delete", "o-1")
    await bench.enqueue("create", "o-1", {"TITLE": "again"})
    for i in range(20):
        await bench.enqueue("create", f"k-{i}", {"TITLE": f"k {i}"})
    await bench.enqueue("update", "never-created", {"TITLE": "x"})  # not found: skipped, no create
    await bench.enqueue_raw({"payload": "{not json"})  # poison: dead-lettered with its bytes (one MULTI)
    summary = await bench.run(timeout_s=60)
    assert dict(summary.outcomes) == {"applied": 24, "skipped": 1, "dead_lettered": 1}
    assert await bench.total_calls("batch") >= 3  # the two 503s were retried
    outcomes = [(o["op"], o["outcome"]) for o in await bench.outcomes() if o["ident"].endswith(":o-1")]
    assert outcomes == [
        ("create", "applied"),
        ("update", "applied"),
        ("delete", "applied"),
        ("create", "applied"),
    ]
    deals = await bench.entities()
    assert_each_once(deals, ["o-1", *(f"k-{i}" for i in range(20))])
    assert next(d for d in deals if d["ORIGIN_ID"] == "o-1")["TITLE"] == "again"
    dead = await bench.redis.xrange(bench.settings.dead_stream)
    assert [f[b"payload"] for _, f in dead] == [b"{not json"]
    assert await bench.redis.xpending(bench.settings.stream, "g") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_several_worker_processes_share_a_stream_on_the_cluster(
    cluster_bench: Bench, tmp_path: Path
) -> None:
    bench = cluster_bench
    await bench.admin.set_faults(latency={"dist": "fixed", "s": 0.05})
    keys = [f"p-{i}" for i in range(120)]
    for key in keys:
        await bench.enqueue("create", key, {"TITLE": key})
        await bench.enqueue("update", key, {"TITLE": f"{key} v2"})
    procs = [start_worker(bench, tmp_path / f"w{n}.log", consumer=f"w{n}", batch_size=5) for n in range(2)]
    for proc in procs:
        assert await asyncio.to_thread(proc.wait, 90) == 0, (tmp_path / "w0.log").read_text()[-3000:]
    deals = await bench.entities()
    assert_each_once(deals, keys)
    assert all(str(d["TITLE"]).endswith("v2") for d in deals)  # the update always after its create
    assert await bench.total_calls("crm.deal.add") == len(keys)
    for n in range(2):  # both processes took work
        assert '"event": "applied"' in (tmp_path / f"w{n}.log").read_text(), f"w{n} applied nothing"


async def test_streams_on_different_primaries_are_served_side_by_side(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Portals spread over the nodes: each portal's stream (and all its keys) lives on one primary."""
    first = f"ct:{uuid.uuid4().hex[:10]}"
    second = next(
        p
        for p in (f"ct:{uuid.uuid4().hex[:10]}" for _ in range(100))
        if local_cluster.primary_of(f"{p}:ops") != local_cluster.primary_of(f"{first}:ops")
    )
    benches = []
    for n, prefix in enumerate((first, second)):
        (tmp_path / str(n)).mkdir()
        benches.append((prefix, *await open_cluster_bench(local_cluster, prefix, tmp_path / str(n))))
    try:
        for _, bench, _ in benches:
            for i in range(30):
                await bench.enqueue("create", f"s-{i}", {"TITLE": "x"})
        for _, bench, _ in benches:  # every key of a stream sits on its stream's primary
            s = bench.settings.keys
            nodes = {
                local_cluster.primary_of(k) for k in (s.stream, s.dead, s.schedule, s.holds, s.lease("x"))
            }
            assert len(nodes) == 1
        await asyncio.gather(*(bench.run(timeout_s=60) for _, bench, _ in benches))
        for _, bench, _ in benches:
            assert_each_once(await bench.entities(), [f"s-{i}" for i in range(30)])
    finally:
        for prefix, bench, emulator in benches:
            await close_cluster_bench(bench, emulator, prefix)


async def test_status_and_dead_letter_commands_read_the_cluster(cluster_bench: Bench) -> None:
    bench = cluster_bench
    await bench.enqueue_raw({"payload": '{"op": "create", "entity": "deal", "key": "missing"'})
    await bench.run()
    env = settings_env(bench.settings)
    status = cli(env, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queue"]["dead_letter_size"] == 1
    listed = cli(env, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    for command in (
        ["portal", "status"],
        ["store", "vouch"],
        ["enqueue", "create", "deal", "cli-1", "-f", "{}"],
    ):
        done = cli(env, *command)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert len(await bench.redis.xrange(bench.settings.stream)) == 1  # the CLI's enqueue
    assert json.loads(listed.stdout)[0]["class"] == "poison"


async def test_a_primary_killed_mid_run_fails_over_and_nothing_is_lost_or_doubled(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    prefix = f"ct:{uuid.uuid4().hex[:10]}"
    bench, emulator = await open_cluster_bench(own_cluster, prefix, tmp_path)
    try:
        await bench.admin.set_faults(latency={"dist": "fixed", "s": 0.1})
        keys = [f"f-{i}" for i in range(150)]
        for key in keys:
            await bench.enqueue("create", key, {"TITLE": key})
        await bench.enqueue("update", "f-0", {"TITLE": "f-0 v2"})
        settings = bench.settings.model_copy(
            update={"batch_size": 5, "concurrency": 2, "claim_idle_ms": 3000}
        )
        primary = own_cluster.primary_of(settings.stream)
        replica = own_cluster.replica_of(primary)
        other = start_worker(
            bench, tmp_path / "other.log", consumer="other", batch_size=5, concurrency=2, claim_idle_ms=3000
        )  # a second worker process, on the same SQLite file (one host)
        async with Worker.open(settings) as worker:
            task = asyncio.create_task(worker.run(until_idle=True))

            async def some_applied() -> bool:
                return len(await bench.entities()) >= 30

            async def other_started() -> bool:  # it connects through the primary about to be killed
                log = tmp_path / "other.log"
                return log.exists() and '"event": "worker started"' in log.read_text()

            await wait_for(other_started)
            await wait_for(some_applied)
            own_cluster.kill(primary)  # SIGKILL: batches are in flight, their settles hit a dead node
            killed = time.monotonic()
            await asyncio.to_thread(own_cluster.wait_promoted, replica)
            promoted_s = time.monotonic() - killed
            await asyncio.wait_for(task, 120)
            assert await asyncio.to_thread(other.wait, 120) == 0, (tmp_path / "other.log").read_text()[-3000:]
            assert '"event": "applied"' in (tmp_path / "other.log").read_text()  # it took work too
            finished_s = time.monotonic() - killed
        deals = await bench.entities()
        assert_each_once(deals, keys)
        assert next(d for d in deals if d["ORIGIN_ID"] == "f-0")["TITLE"] == "f-0 v2"
        assert await bench.total_calls("crm.deal.add") == len(keys)  # no create sent twice
        assert await bench.redis.xrange(settings.dead_stream) == []
        print(f"failover: replica promoted in {promoted_s:.1f} s, all done {finished_s:.1f} s after the kill")
    finally:
        await close_cluster_bench(bench, emulator, prefix, clean=False)
