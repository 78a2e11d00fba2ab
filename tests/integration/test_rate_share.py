"""BITRIX_WORKER_RATE_SHARE: the limiter a worker builds from its settings leaves the rest of the portal's
budget to other applications (rate and burst both scale)."""

from __future__ import annotations

import asyncio

import pytest
from harness import Bench

from bitrix_worker.config import Settings, load_settings
from bitrix_worker.errors import ConfigError
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.producer import build_operation, enqueue
from bitrix_worker.worker import Worker


def test_rate_fraction_is_safety_times_share() -> None:
    assert load_settings().rate_fraction == pytest.approx(0.98)
    assert load_settings(rate_share=0.85).rate_fraction == pytest.approx(0.98 * 0.85)
    for bad in (0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="BITRIX_WORKER_RATE_SHARE"):
            load_settings(rate_share=bad)


async def _immediate_slots(bench: Bench, share: float) -> int:
    """Requests the worker's own limiter lets out at once from an empty bucket (its burst)."""
    settings = bench.with_settings(rate_burst=10, rate_per_s=0.5, rate_share=share).settings
    await bench.redis.delete(settings.keys.limiter(settings.webhook.portal))
    async with Worker.open(settings) as worker:
        waits = [await worker.portal.limiter.reserve() for _ in range(12)]
    return sum(1 for w in waits if w == 0)


async def test_the_worker_limiter_uses_only_its_share(bench: Bench) -> None:
    assert await _immediate_slots(bench, 1.0) == 8  # (10 - 1 s of drain) x 0.98 (rate_safety)
    assert await _immediate_slots(bench, 0.5) == 4  # 9 x 0.98 x 0.5: half the burst left to others


def test_the_limiter_burst_leaves_one_second_of_drain() -> None:
    """The portal drains once per second: right after a burst its counter can be a second's drain higher
    than a continuous drain says, so the limiter's burst is the bucket less that (50 - 2 on cloud plans)."""
    assert load_settings().limiter_burst == 48
    assert load_settings(rate_burst=250, rate_per_s=5).limiter_burst == 245
    assert load_settings(rate_burst=10, rate_per_s=0.5).limiter_burst == 9
    assert load_settings(rate_burst=1, rate_per_s=2).limiter_burst == 1


def _second_deployment(bench: Bench) -> Settings:
    """Another deployment on the same portal: its own stream, group and mapping store, same webhook."""
    a = bench.settings
    return load_settings(
        **{
            **a.model_dump(),
            "webhook_url": a.webhook.reveal(),
            "stream": f"{a.stream}-b",
            "dead_stream": f"{a.dead_stream}-b",
            "consumer": f"{a.consumer}-b",
            "database_url": f"sqlite+aiosqlite:///{bench.tmp / 'mapping-b.sqlite3'}",
        }
    )


async def test_two_streams_on_one_portal_share_one_bucket(bench: Bench) -> None:
    """The limiter is per portal: two deployments with separate streams book requests in one bucket."""
    a = bench.with_settings(rate_burst=10, rate_per_s=0.5).settings
    b = _second_deployment(bench)
    assert a.keys.limiter(a.webhook.portal) == b.keys.limiter(b.webhook.portal)
    assert a.keys.limiter(a.webhook.portal).startswith("{portal:127.0.0.1:")
    await bench.redis.delete(a.keys.limiter(a.webhook.portal))
    async with Worker.open(a) as wa, Worker.open(b) as wb:
        waits = [await (wa if i % 2 else wb).portal.limiter.reserve() for i in range(12)]
    assert sum(1 for w in waits if w == 0) == 8  # one burst of (10 - 1) x 0.98 for both, not 8 each


async def test_two_streams_draining_at_once_are_not_refused(bench: Bench) -> None:
    """Two deployments drain backlogs on one portal at its limits at the same time: the portal refuses
    nothing. Each alone would take the whole burst and the whole rate: with a limiter per stream, together
    they would send twice what the portal drains."""
    await bench.admin.set_limits(burst=20, drain_per_s=4)
    a = bench.with_settings(rate_burst=20, rate_per_s=4).settings
    b = _second_deployment(bench)
    await bench.redis.delete(a.keys.limiter(a.webhook.portal))
    for settings in (a, b):
        for i in range(1000):
            operation = build_operation(OpKind.CREATE, Entity.DEAL, f"{settings.stream}-{i}", {"TITLE": "x"})
            await enqueue(bench.redis, operation, stream=settings.stream)
    async with Worker.open(a) as wa, Worker.open(b) as wb:
        await asyncio.wait_for(asyncio.gather(wa.run(until_idle=True), wb.run(until_idle=True)), 60)
    stats = await bench.admin.stats()
    refused = sum(int(per.get("QUERY_LIMIT_EXCEEDED", 0)) for per in stats["calls"].values())
    assert refused == 0
    assert len(await bench.entities()) == 2000
