"""The seed's six cases and the taxonomy's budgets, as a table over the pure policy."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker.config import load_settings
from bitrix_worker.operations import OpKind
from bitrix_worker.policy import Action, RetryPolicy, decide, equal_jitter, full_jitter
from bitrix_worker.reasons import Reason
from bitrix_worker.taxonomy import Classification, ErrorClass, Execution

POLICY = RetryPolicy.from_settings(load_settings())


def cls(error_class: ErrorClass, execution: Execution = Execution.EXECUTED, **kw: object) -> Classification:
    return Classification(error_class, execution, **kw)  # type: ignore[arg-type]


def run_until_final(op: OpKind, c: Classification, policy: RetryPolicy = POLICY) -> tuple[Action, int]:
    """Feed the same failure until the decision is final; return it and the number of calls spent."""
    rng = random.Random(1)
    failures = bounces = 0
    for calls in range(1, 200):
        if c.counts_against_budget:
            failures += 1
        else:
            bounces += 1
        d = decide(op, c, failures=failures, bounces=bounces, policy=policy, rng=rng)
        if d.action is not Action.RETRY:
            return d.action, calls
    raise AssertionError("never final")


@pytest.mark.parametrize(
    ("op", "error_class", "final", "calls"),
    [
        # the seed's six cases
        (OpKind.UPDATE, ErrorClass.NOT_FOUND, Action.SKIP, 1),
        (OpKind.CREATE, ErrorClass.NOT_FOUND, Action.DEAD_LETTER, 2),
        (OpKind.UPDATE, ErrorClass.INVALID_DATA, Action.DEAD_LETTER, 2),
        (OpKind.CREATE, ErrorClass.SERVER_ERROR, Action.DEAD_LETTER, 6),
        (OpKind.UPDATE, ErrorClass.RATE_LIMITED, Action.DEAD_LETTER, 21),
        (OpKind.UPDATE, ErrorClass.AUTH, Action.DEAD_LETTER, 2),
        # the rest of the taxonomy
        (OpKind.DELETE, ErrorClass.NOT_FOUND, Action.DONE, 1),
        (OpKind.UPSERT, ErrorClass.NOT_FOUND, Action.RECREATE, 1),
        (OpKind.UPDATE, ErrorClass.NETWORK, Action.DEAD_LETTER, 6),
        (OpKind.UPDATE, ErrorClass.METHOD_LIMITED, Action.DEAD_LETTER, 21),
        (OpKind.UPDATE, ErrorClass.POISON, Action.DEAD_LETTER, 1),
    ],
)
def test_calls_spent_per_class(op: OpKind, error_class: ErrorClass, final: Action, calls: int) -> None:
    assert run_until_final(op, cls(error_class)) == (final, calls)


def test_limits_never_spend_the_failure_budget() -> None:
    rng = random.Random(0)
    for c in (ErrorClass.RATE_LIMITED, ErrorClass.METHOD_LIMITED, ErrorClass.BLOCKED):
        d = decide(
            OpKind.UPDATE, cls(c, Execution.NOT_EXECUTED), failures=0, bounces=1, policy=POLICY, rng=rng
        )
        assert d.action is Action.RETRY
        assert not d.counts_as_failure


def test_auth_gets_its_one_retry() -> None:
    d = decide(OpKind.UPDATE, cls(ErrorClass.AUTH), failures=1, bounces=0, policy=POLICY, rng=random.Random())
    assert (d.action, d.reason) == (Action.RETRY, Reason.RETRYING)


def test_blocked_waits_out_the_portal_pause() -> None:
    d = decide(
        OpKind.UPDATE, cls(ErrorClass.BLOCKED), failures=0, bounces=1, policy=POLICY, rng=random.Random()
    )
    assert (d.action, d.reason, d.delay_s) == (Action.RETRY, Reason.BLOCKED, POLICY.blocked_pause_s)


def test_recreate_deleted_setting() -> None:
    policy = RetryPolicy.from_settings(load_settings(recreate_deleted=True))
    d = decide(
        OpKind.UPDATE, cls(ErrorClass.NOT_FOUND), failures=1, bounces=0, policy=policy, rng=random.Random()
    )
    assert d.action is Action.RECREATE


def test_method_limit_waits_for_reset() -> None:
    d = decide(
        OpKind.UPDATE,
        cls(ErrorClass.METHOD_LIMITED),
        failures=0,
        bounces=1,
        policy=POLICY,
        rng=random.Random(),
        method_reset_in_s=42.0,
    )
    assert d.delay_s >= 42.0


def test_retry_after_is_honoured() -> None:
    c = cls(ErrorClass.RATE_LIMITED, retry_after_s=30.0)
    d = decide(OpKind.UPDATE, c, failures=0, bounces=1, policy=POLICY, rng=random.Random())
    assert d.delay_s >= 30.0


def test_budgets_follow_settings() -> None:
    policy = RetryPolicy.from_settings(load_settings(retries_server_error=2, retries_not_found_update=1))
    assert run_until_final(OpKind.UPDATE, cls(ErrorClass.SERVER_ERROR), policy) == (Action.DEAD_LETTER, 3)
    assert run_until_final(OpKind.UPDATE, cls(ErrorClass.NOT_FOUND), policy) == (Action.SKIP, 2)


@given(st.integers(1, 40), st.floats(0.001, 10), st.floats(0.001, 600), st.integers(0, 2**32))
def test_backoff_bounds(attempt: int, base: float, cap: float, seed: int) -> None:
    rng = random.Random(seed)
    ceiling = min(cap, base * 2 ** (attempt - 1))
    assert 0 <= full_jitter(attempt, base, cap, rng) <= ceiling
    assert ceiling / 2 <= equal_jitter(attempt, base, cap, rng) <= ceiling


@given(
    st.sampled_from(list(ErrorClass)), st.sampled_from(list(OpKind)), st.integers(1, 50), st.integers(0, 50)
)
def test_decide_is_total_and_delays_are_capped(
    e: ErrorClass, op: OpKind, failures: int, bounces: int
) -> None:
    d = decide(op, cls(e), failures=failures, bounces=bounces + 1, policy=POLICY, rng=random.Random(0))
    assert d.action in Action
    assert d.delay_s >= 0
    if d.action is Action.RETRY and e is not ErrorClass.BLOCKED:
        assert d.delay_s <= POLICY.backoff_max_s or e is ErrorClass.METHOD_LIMITED
