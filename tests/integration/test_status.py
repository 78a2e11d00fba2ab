"""`gather_status` on a real Redis after real worker runs (plus a consumer that read and never acked)."""

from __future__ import annotations

import asyncio

from harness import Bench

from bitrix_worker.redis.breaker import Breaker
from bitrix_worker.redis.connection import safe_redis_url
from bitrix_worker.status import gather_status


async def test_status_after_a_run_counts_outcomes_dead_letters_workers_and_mappings(bench: Bench) -> None:
    await bench.enqueue("create", "order-1", {"TITLE": "ok"})
    await bench.enqueue("create", "order-2", {"TITLE": "bad", "CURRENCY_ID": "XXX"})
    await bench.enqueue_raw({"payload": "not json"})
    await bench.run()
    s = await gather_status(bench.redis, bench.settings)
    assert s.queue.stream_length == 0
    assert s.queue.pending == 0
    assert s.queue.lag_s is None
    assert s.dead_letter_by_class == {"invalid_data": 1, "poison": 1}
    assert s.queue.dead_letter_size == 2
    assert s.counters["outcome:applied"] == 1
    assert s.counters["outcome:dead_lettered"] == 2
    assert s.mapping == {"active": 1, "deleted": 0}
    assert s.workers == []  # the worker stopped: it removed itself (a crashed one ages out instead)
    assert s.live_workers == 0
    assert s.breaker is not None
    assert s.breaker["open"] is False
    assert s.limiter is not None
    assert s.limiter["factor"] == 1.0
    data = s.as_json()
    assert data["dead_letter_truncated"] is False
    assert data["portal"] == bench.settings.webhook.portal


async def test_status_shows_pending_per_consumer_lag_schedule_and_an_open_breaker(bench: Bench) -> None:
    r, k = bench.redis, bench.settings.keys
    await bench.enqueue("create", "order-1")
    await bench.enqueue("create", "order-2")
    await bench.enqueue("create", "order-3")
    await r.xgroup_create(k.stream, bench.settings.group, id="0")
    await r.xreadgroup(bench.settings.group, "crashed-worker", {k.stream: ">"}, count=2)
    now_s, _ = await r.time()
    await r.zadd(k.schedule, {"1-0": (now_s + 60) * 1000})
    await r.hset(k.workers, "gone-worker", (now_s - 3600) * 1000)
    await Breaker(r, k.breaker(bench.settings.webhook.portal), cooldown_s=30, max_cooldown_s=60).trip(
        "auth: x"
    )
    await asyncio.sleep(0.05)
    s = await gather_status(bench.redis, bench.settings, scan_cap=10)
    assert s.queue.stream_length == 3
    assert (s.queue.pending, s.queue.pending_by_consumer) == (2, {"crashed-worker": 2})
    assert s.queue.oldest_pending_age_s is not None
    assert s.queue.oldest_pending_age_s >= 0.04
    assert s.queue.lag_s is not None
    assert s.queue.lag_s >= s.queue.oldest_pending_age_s
    assert s.queue.scheduled == 1
    assert s.queue.next_due_in_s is not None
    assert 55 < s.queue.next_due_in_s <= 60
    (worker,) = s.workers
    assert (worker["consumer"], worker["live"]) == ("gone-worker", False)
    assert 3600 <= worker["last_seen_s"] < 3602
    assert s.breaker is not None
    assert (s.breaker["open"], s.breaker["reason"]) == (True, "auth: x")


async def test_status_of_a_stream_nobody_consumes_yet(bench: Bench) -> None:
    s = await gather_status(bench.redis, bench.settings)
    assert not s.queue.group_exists
    assert s.queue.pending == 0
    assert s.mapping["active"] == 0
    assert "does not exist yet" in s.mapping["note"]  # status never creates the SQLite file


def test_safe_redis_url_hides_the_password() -> None:
    assert safe_redis_url("redis://user:s3cret@host:6379/0") == "redis://user:***@host:6379/0"
    assert safe_redis_url("redis://:s3cret@host/0") == "redis://:***@host/0"
    assert safe_redis_url("redis://host:6379/0") == "redis://host:6379/0"
