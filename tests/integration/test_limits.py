"""The shared limiter, method pauses and breaker on a real Redis, with an injected clock."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from bitrix_worker.redis.breaker import Breaker
from bitrix_worker.redis.limits import Limiter, MethodPauses


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_burst_then_drain_rate(redis_client: aioredis.Redis, key_prefix: str, clock: Clock) -> None:
    limiter = Limiter(
        redis_client, f"{key_prefix}:lim", rate_per_s=2, burst=50, clock=clock, max_reserve_s=3600
    )
    waits = [await limiter.reserve() for _ in range(60)]
    assert waits[:50] == [0.0] * 50  # the burst goes out at once
    assert waits[50:] == pytest.approx([0.5 * i for i in range(1, 11)])  # then one every 1/rate s
    clock.now += 100  # the bucket drains fully
    assert await limiter.reserve() == 0.0


async def test_processes_share_one_bucket(
    redis_client: aioredis.Redis, key_prefix: str, clock: Clock
) -> None:
    a = Limiter(redis_client, f"{key_prefix}:lim", rate_per_s=2, burst=10, clock=clock, max_reserve_s=3600)
    b = Limiter(redis_client, f"{key_prefix}:lim", rate_per_s=2, burst=10, clock=clock, max_reserve_s=3600)
    waits = [await (a if i % 2 else b).reserve() for i in range(12)]
    assert waits.count(0.0) == 10


async def test_safety_margin(redis_client: aioredis.Redis, key_prefix: str, clock: Clock) -> None:
    limiter = Limiter(
        redis_client, f"{key_prefix}:lim", rate_per_s=2, burst=50, safety=0.9, clock=clock, max_reserve_s=3600
    )
    waits = [await limiter.reserve() for _ in range(46)]
    assert waits.count(0.0) == 45
    assert waits[-1] == pytest.approx(1 / 1.8, abs=0.002)


async def test_refusal_slows_everyone_and_recovers(
    redis_client: aioredis.Redis, key_prefix: str, clock: Clock
) -> None:
    limiter = Limiter(
        redis_client, f"{key_prefix}:lim", rate_per_s=2, burst=50, clock=clock, max_reserve_s=3600
    )
    other = Limiter(
        redis_client, f"{key_prefix}:lim", rate_per_s=2, burst=50, clock=clock, max_reserve_s=3600
    )
    await limiter.penalize()
    state = await other.state()
    assert state.factor == pytest.approx(0.5)
    first = await other.reserve()
    assert first == pytest.approx(1.0, abs=0.01)  # 1 / (2 * 0.5): the bucket is treated as full
    clock.now += 10
    assert (await other.state()).factor == pytest.approx(0.7, abs=0.01)
    clock.now += 100
    assert (await other.state()).factor == pytest.approx(1.0)


async def test_reserve_does_not_book_beyond_horizon(
    redis_client: aioredis.Redis, key_prefix: str, clock: Clock
) -> None:
    limiter = Limiter(redis_client, f"{key_prefix}:lim", rate_per_s=2, burst=1, clock=clock, max_reserve_s=1)
    assert await limiter.reserve() == 0.0
    assert await limiter.reserve() == 0.5
    assert await limiter.reserve() == 1.0
    assert await limiter.reserve() == -1.5  # not booked: the caller waits and asks again
    clock.now += 1.0
    assert await limiter.reserve() == 0.5


async def test_method_pause_before_budget(
    redis_client: aioredis.Redis, key_prefix: str, clock: Clock
) -> None:
    pauses = MethodPauses(redis_client, f"{key_prefix}:mp", budget_s=480, safety=0.9, clock=clock)
    assert await pauses.observe("crm.deal.update", 100.0, clock.now + 300) is None
    assert await pauses.paused_for(["crm.deal.update"]) == {}
    assert await pauses.observe("crm.deal.update", 440.0, clock.now + 120) == clock.now + 120
    assert await pauses.paused_for(["crm.deal.update", "crm.deal.add"]) == {"crm.deal.update": 120.0}
    assert await pauses.reset_at("crm.deal.update") == clock.now + 120
    clock.now += 121
    assert await pauses.paused_for(["crm.deal.update"]) == {}


async def test_breaker_opens_escalates_and_closes(
    redis_client: aioredis.Redis, key_prefix: str, clock: Clock
) -> None:
    breaker = Breaker(redis_client, f"{key_prefix}:br", cooldown_s=30, max_cooldown_s=100, clock=clock)
    peer = Breaker(redis_client, f"{key_prefix}:br", cooldown_s=30, max_cooldown_s=100, clock=clock)
    assert not (await peer.state()).open
    assert (await breaker.trip("auth: INVALID_CREDENTIALS"))[0]
    state = await peer.state()
    assert state.open
    assert state.until == clock.now + 30
    opened, same = await peer.trip("auth: a batch that was in flight")
    assert not opened  # one outage, one cool-down
    assert same.until == clock.now + 30
    clock.now += 31  # the cool-down ran out and a probe failed: it doubles, up to the maximum
    assert (await breaker.trip("probe failed"))[1].cooldown_s == 60
    clock.now += 61
    assert (await breaker.trip("probe failed"))[1].cooldown_s == 100
    opened, blocked = await breaker.trip("OVERLOAD_LIMIT", cooldown_s=600)
    assert opened  # an explicit, longer pause extends a running cool-down
    assert blocked.until == clock.now + 600
    assert await breaker.acquire_probe(5)
    assert not await peer.acquire_probe(5)  # one prober at a time
    await peer.close()
    assert not (await breaker.state()).open
