"""Nothing lost: SIGKILL mid-flight, graceful SIGTERM, malformed input, entries that keep killing workers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from harness import WORKER_CMD, Bench, settings_env


def spawn(bench: Bench, log: Path, **overrides: object) -> subprocess.Popen[bytes]:
    env = settings_env(bench.settings, **overrides)
    return subprocess.Popen(
        [sys.executable, *WORKER_CMD], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


async def wait_for(predicate: object, timeout_s: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def test_sigkill_mid_flight_loses_nothing_and_duplicates_nothing(bench: Bench, tmp_path: Path) -> None:
    await bench.admin.set_faults(latency={"dist": "fixed", "s": 0.15})
    n = 300
    for i in range(n):
        await bench.enqueue("create", f"order-{i}", {"TITLE": f"Order {i}"})
    first = spawn(bench, tmp_path / "a.log", batch_size=10, concurrency=4, consumer="victim")

    async def some_applied_and_more_in_flight() -> bool:
        if len(await bench.entities()) < 40:
            return False
        return int((await bench.redis.xpending(bench.settings.stream, bench.settings.group))["pending"]) > 0

    await wait_for(some_applied_and_more_in_flight)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    pending = await bench.redis.xpending(bench.settings.stream, bench.settings.group)
    assert pending["pending"] > 0  # it really died with work in flight
    await bench.run(claim_idle_ms=300, consumer="rescuer", timeout_s=60)
    deals = await bench.entities()
    origins = [d["ORIGIN_ID"] for d in deals]
    assert sorted(origins) == sorted(f"order-{i}" for i in range(n))  # every key exactly once
    assert await bench.dead() == []
    outcomes = await bench.outcomes()
    assert len({o["ident"] for o in outcomes}) == n
    assert (await bench.redis.xpending(bench.settings.stream, bench.settings.group))["pending"] == 0


async def test_sigterm_finishes_in_flight_and_leaves_the_rest(bench: Bench, tmp_path: Path) -> None:
    await bench.admin.set_faults(latency={"dist": "fixed", "s": 0.3})
    for i in range(200):
        await bench.enqueue("create", f"t-{i}", {"TITLE": "x"})
    worker = spawn(bench, tmp_path / "w.log", batch_size=5, concurrency=2)

    async def started() -> bool:
        return len(await bench.entities()) >= 5

    await wait_for(started)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    pending = await bench.redis.xpending(bench.settings.stream, bench.settings.group)
    assert pending["pending"] == 0  # in-flight batches were finished, not abandoned
    applied = len(await bench.entities())
    assert 0 < applied < 200
    await bench.admin.set_faults(latency=None)
    await bench.run()
    assert len(await bench.entities()) == 200


async def test_malformed_input_is_dead_lettered_with_the_reason(bench: Bench) -> None:
    await bench.enqueue_raw({"payload": "{not json"})
    await bench.enqueue_raw({"payload": json.dumps({"op": "merge", "entity": "deal", "key": "p-1"})})
    await bench.enqueue_raw(
        {"payload": json.dumps({"op": "create", "entity": "deal", "key": "p-2", "fields": []})}
    )
    await bench.enqueue_raw({"payload": json.dumps({"op": "create", "entity": "invoice", "key": "p-3"})})
    await bench.enqueue_raw({"payload": json.dumps({"op": "update", "entity": "deal"})})
    await bench.enqueue_raw({"something": "else"})
    await bench.enqueue_raw({"payload": b"\xff\xfe binary"})
    await bench.enqueue("create", "p-2", {"TITLE": "fine"})  # same key as a poison entry: not blocked by it
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 7, "applied": 1}
    rows = await bench.redis.xrange(bench.settings.dead_stream)
    reasons = [json.loads(f[b"error"])["description"] for _, f in rows]
    assert all(json.loads(f[b"error"])["class"] == "poison" for _, f in rows)
    assert any("not JSON" in r for r in reasons)
    assert any(r.startswith("op:") for r in reasons)
    assert any(r.startswith("fields:") for r in reasons)
    assert any(r.startswith("entity:") for r in reasons)
    assert any(r.startswith("key:") for r in reasons)
    assert any("no 'payload' field" in r for r in reasons)
    assert b"\xff\xfe binary" in [f.get(b"payload") for _, f in rows]  # bytes kept unchanged
    assert await bench.total_calls("crm.deal.add") == 1
    assert await bench.redis.hlen(bench.settings.keys.holds) == 0
    # Entries without a readable key (no payload, not JSON, not UTF-8, no key) take the raw path; they are
    # counted and recorded like every other dead letter.
    counters = await bench.redis.hgetall(bench.settings.keys.counters)
    assert int(counters[b"dead_lettered:poison"]) == 7
    assert int(counters[b"outcome:dead_lettered"]) == 7
    dead = [o for o in await bench.outcomes() if o["outcome"] == "dead_lettered"]
    assert sorted(o["stream_id"] for o in dead) == sorted(
        json.loads(f[b"error"])["stream_id"] for _, f in rows
    )
    assert {(o["reason"], o["class"]) for o in dead} == {("poison", "poison")}


async def test_entry_that_keeps_killing_workers_becomes_poison(bench: Bench) -> None:
    await bench.enqueue("create", "killer", {"TITLE": "x"})
    # Simulate workers dying right after reading it: deliver it max_deliveries times without settling.
    s = bench.settings
    q = bench.redis
    from bitrix_worker.redis.streams import OperationQueue

    queue = OperationQueue(q, s.keys, group=s.group, consumer="dying")
    await queue.ensure_group()
    (entry,), _ = await queue.claim(10)
    await queue.mark_sent([entry.id])  # each dying worker got as far as sending its batch
    for _ in range(s.max_deliveries - 1):
        await asyncio.sleep(0.02)
        await queue.reclaim(min_idle_ms=10, count=10)
        await queue.mark_sent([entry.id])
    summary = await bench.run(claim_idle_ms=100)
    assert summary.outcomes == {"dead_lettered": 1}
    ((payload, error),) = await bench.dead()
    assert payload["key"] == "killer"
    assert error["class"] == "poison"
    assert "keeps failing a worker" in error["description"]
    assert await bench.total_calls("crm.deal.add") == 0


async def test_redis_connections_dropped_mid_run_lose_nothing(bench: Bench) -> None:
    await bench.admin.set_faults(latency={"dist": "fixed", "s": 0.05})
    for i in range(150):
        await bench.enqueue("create", f"r-{i}", {"TITLE": "x"})
    from bitrix_worker.worker import Worker

    name = f"bitrix-worker:{bench.settings.consumer}"
    async with Worker.open(bench.settings.model_copy(update={"batch_size": 5})) as worker:
        task = asyncio.create_task(worker.run(until_idle=True))
        kills = 0
        while not task.done() and kills < 5:
            await asyncio.sleep(0.15)
            for client in await bench.redis.client_list():
                if client.get("name") == name:
                    await bench.redis.client_kill_filter(_id=client["id"])
                    kills += 1
        await asyncio.wait_for(task, 60)
    assert kills >= 3
    origins = sorted(d["ORIGIN_ID"] for d in await bench.entities())
    assert origins == sorted(f"r-{i}" for i in range(150))
    assert await bench.dead() == []
    assert (await bench.redis.xpending(bench.settings.stream, bench.settings.group))["pending"] == 0


async def test_retry_unit_that_keeps_killing_workers_is_dead_lettered_per_operation(bench: Bench) -> None:
    s = bench.settings
    members = [
        {
            "origin": "1-1",
            "payload": json.dumps({"op": "create", "entity": "deal", "key": "u", "fields": {}}),
        },
        {
            "origin": "1-2",
            "payload": json.dumps({"op": "update", "entity": "deal", "key": "u", "fields": {}}),
        },
    ]
    unit = json.dumps({"ident": "deal:u", "members": members, "failures": 1, "bounces": 0, "history": []})
    from bitrix_worker.redis.streams import OperationQueue

    queue = OperationQueue(bench.redis, s.keys, group=s.group, consumer="dying")
    await queue.ensure_group()
    # a retry unit as settle.lua schedules it (the key's turn kept), then promoted: the worker's own entry
    await bench.redis.hincrby(s.keys.holds, "deal:u", 1)
    await bench.redis.hset(s.keys.schedule_data, "1-1", unit)
    await bench.redis.zadd(s.keys.schedule, {"1-1": 0})
    assert await queue.promote_due() == 1
    (entry,), _ = await queue.claim(10)
    assert entry.whose == "unit"
    await queue.mark_sent([entry.id])
    for _ in range(s.max_deliveries - 1):
        await asyncio.sleep(0.02)
        await queue.reclaim(min_idle_ms=10, count=10)
        await queue.mark_sent([entry.id])
    summary = await bench.run(claim_idle_ms=100)
    assert summary.outcomes == {"dead_lettered": 2}
    dead = await bench.dead()
    assert [(p["op"], e["stream_id"]) for p, e in dead] == [("create", "1-1"), ("update", "1-2")]
    assert sorted(o["stream_id"] for o in await bench.outcomes()) == ["1-1", "1-2"]
    assert await bench.redis.hlen(s.keys.holds) == 0
