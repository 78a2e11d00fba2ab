"""Leaky bucket and per-method operating budget with an injected clock (no sleeping)."""

from __future__ import annotations

import pytest

from bitrix_worker.emulator import LeakyBucket, OperatingBudget


def test_burst_then_refusal_without_filling() -> None:
    bucket = LeakyBucket(burst=50, drain_per_s=2.0)
    accepted = [bucket.try_acquire(now=100.0) for _ in range(60)]
    assert accepted.count(True) == 50
    assert accepted[50:] == [False] * 10
    # refused requests were not counted: half a second later exactly one more fits
    assert bucket.current(100.0) == pytest.approx(50.0)
    assert bucket.try_acquire(now=100.5)
    assert not bucket.try_acquire(now=100.5)
    assert bucket.seconds_until_free(100.5) == pytest.approx(0.5)


def test_steady_two_per_second_for_30_s_is_never_refused_even_from_a_full_bucket() -> None:
    bucket = LeakyBucket(burst=50, drain_per_s=2.0)
    assert all(bucket.try_acquire(now=0.0) for _ in range(50))
    refused = sum(not bucket.try_acquire(now=0.5 * (i + 1)) for i in range(60))  # 30 s at 2/s
    assert refused == 0


def test_steady_two_per_second_from_empty_never_grows() -> None:
    bucket = LeakyBucket(burst=50, drain_per_s=2.0)
    for i in range(60):
        assert bucket.try_acquire(now=0.5 * i)
    assert bucket.current(30.0) == pytest.approx(0.0)


def test_three_per_second_overflows_a_full_bucket() -> None:
    bucket = LeakyBucket(burst=50, drain_per_s=2.0)
    assert all(bucket.try_acquire(now=0.0) for _ in range(50))
    results = [bucket.try_acquire(now=(i + 1) / 3) for i in range(30)]
    assert results.count(False) == 10  # 30 asked in 10 s, 20 drained


def test_enterprise_plan_and_clock_going_backwards() -> None:
    bucket = LeakyBucket(burst=250, drain_per_s=5.0)
    assert sum(bucket.try_acquire(now=10.0) for _ in range(300)) == 250
    assert not bucket.try_acquire(now=9.0)  # an older timestamp drains nothing
    assert bucket.try_acquire(now=10.2)


def test_operating_budget_blocks_at_limit_and_reports_reset() -> None:
    budget = OperatingBudget(limit_s=10.0, window_s=600.0)
    budget.record("crm.deal.add", 4.0, now=1000.0)
    budget.record("crm.deal.add", 4.0, now=1070.0)
    assert not budget.blocked("crm.deal.add", now=1071.0)
    budget.record("crm.deal.add", 4.0, now=1130.0)
    assert budget.operating("crm.deal.add", now=1131.0) == pytest.approx(12.0)
    assert budget.blocked("crm.deal.add", now=1131.0)
    assert not budget.blocked("crm.deal.update", now=1131.0)  # other methods keep working
    assert budget.reset_at("crm.deal.add", now=1131.0) == pytest.approx(1600.0)
    # the oldest basket drops out 10 min after its first call; operating does not fall to zero
    assert budget.operating("crm.deal.add", now=1600.0) == pytest.approx(8.0)
    assert not budget.blocked("crm.deal.add", now=1600.0)
    assert budget.reset_at("crm.deal.add", now=1600.0) == pytest.approx(1670.0)
    assert budget.operating("crm.deal.add", now=1730.0) == pytest.approx(0.0)


def test_one_minute_baskets_group_calls() -> None:
    budget = OperatingBudget(limit_s=480.0, window_s=600.0)
    for t in (0.0, 10.0, 59.0):
        budget.record("m", 1.0, now=t)
    budget.record("m", 1.0, now=61.0)
    assert budget.operating("m", now=100.0) == pytest.approx(4.0)
    assert budget.operating("m", now=600.0) == pytest.approx(1.0)  # the first basket (3 calls) expired
    assert budget.basket_s == 60.0


def test_zero_time_calls_leave_no_basket() -> None:
    budget = OperatingBudget()
    budget.record("m", 0.0, now=5.0)
    assert budget.methods() == []
    assert budget.reset_at("m", now=5.0) == pytest.approx(605.0)
    budget.record("m", 1.0, now=5.0)
    budget.reset()
    assert budget.operating("m", now=5.0) == 0.0


def test_per_second_drain_drops_by_the_rate_at_each_whole_second_only() -> None:
    bucket = LeakyBucket(burst=50, drain_per_s=2.0, per_second=True)
    assert all(bucket.try_acquire(now=100.2) for _ in range(50))
    assert not bucket.try_acquire(now=100.9)  # continuous would have drained 1.4 by now
    assert bucket.seconds_until_free(100.9) == pytest.approx(0.1)  # the next whole second
    assert bucket.current(101.0) == pytest.approx(48.0)
    assert bucket.try_acquire(now=101.0)
    assert bucket.try_acquire(now=101.5)
    assert not bucket.try_acquire(now=101.99)
    assert bucket.current(103.7) == pytest.approx(46.0)  # two more whole seconds crossed
    bucket.level = 55.0
    assert bucket.seconds_until_free(103.7) == pytest.approx(2.3)  # 6 over: the steps at 104, 105, 106


def test_per_second_drain_refuses_even_pacing_that_a_continuous_drain_lets_through() -> None:
    """The worker's pace at rate_safety 1.0 (exactly 2/s, evenly spaced) after a full burst: a continuous
    drain never refuses it; draining in whole-second steps refuses it when a request lands just before a
    step. At 0.98 of the rate with one request less in the burst neither refuses anything."""

    def refused(per_second: bool, burst_sent: int, interval_s: float, start: float) -> int:
        bucket = LeakyBucket(burst=50, drain_per_s=2.0, per_second=per_second)
        assert all(bucket.try_acquire(now=start) for _ in range(burst_sent))
        return sum(not bucket.try_acquire(now=start + interval_s * (i + 1)) for i in range(600))

    assert refused(False, 50, 0.5, 0.3) == 0
    assert refused(True, 50, 0.5, 0.3) > 0
    for start in (0.0, 0.01, 0.3, 0.49, 0.51, 0.99):
        assert refused(True, 49, 1 / 1.96, start) == 0
        assert refused(False, 49, 1 / 1.96, start) == 0


def test_per_second_drain_never_drains_backwards_or_more_than_whole_seconds() -> None:
    bucket = LeakyBucket(burst=10, drain_per_s=2.0, per_second=True)
    assert all(bucket.try_acquire(now=5.999) for _ in range(10))
    assert bucket.current(5.5) == pytest.approx(10.0)  # an older timestamp drains nothing
    assert bucket.current(6.0) == pytest.approx(8.0)
    assert bucket.current(6.999) == pytest.approx(8.0)
    assert bucket.current(60.0) == pytest.approx(0.0)
