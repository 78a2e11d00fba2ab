"""BITRIX_WORKER_RATE_SHARE: the limiter a worker builds from its settings leaves the rest of the portal's
budget to other applications (rate and burst both scale)."""

from __future__ import annotations

import pytest
from harness import Bench

from bitrix_worker.config import load_settings
from bitrix_worker.errors import ConfigError
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
    assert await _immediate_slots(bench, 1.0) == 9  # 10 x 0.98 (rate_safety)
    assert await _immediate_slots(bench, 0.5) == 4  # 10 x 0.98 x 0.5: half the burst left to others
