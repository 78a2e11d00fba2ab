"""Pure: one failed attempt of one unit -> its Result.

Record the attempt in the unit's history, spend the right counter (a failure of its own, or a refusal by
the portal's limits), ask the policy, and turn the decision into the Result that settles the unit. A create
whose connection broke after sending waits for the portal's own cut-off before its retry looks it up, or
the lookup could miss an entity that is committed a moment later. No I/O and no clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .operations import OpKind
from .outcomes import Outcome, Result
from .plan import Call, Plan
from .policy import Action, RetryPolicy, decide, full_jitter
from .reasons import Reason
from .taxonomy import Classification, ErrorClass
from .units import WorkUnit
from .values import State

_CALL_OP = {Call.CREATE: OpKind.CREATE, Call.UPDATE: OpKind.UPDATE, Call.DELETE: OpKind.DELETE}
# decision -> (outcome, what to record in the mapping store)
_DECISION_OUTCOME: dict[Action, tuple[Outcome, State | None]] = {
    Action.RETRY: (Outcome.RETRY, None),
    Action.SKIP: (Outcome.SKIPPED, "deleted"),
    Action.DONE: (Outcome.APPLIED, "deleted"),
    Action.RECREATE: (Outcome.RETRY, "deleted"),
    Action.DEAD_LETTER: (Outcome.DEAD, None),
}


@dataclass(frozen=True, slots=True)
class Circumstances:
    """What the I/O side knows about the attempt besides its classification."""

    at_ms: int
    method_reset_in_s: float | None = None  # OPERATION_TIME_LIMIT: when the method's budget resets
    sent_s: float | None = None  # how long ago a request whose fate is unknown was sent
    portal_request_timeout_s: float = 60.0
    secrets: Sequence[str] = ()
    whole_request: bool = False  # the whole request failed in a way that may be the portal's
    portal_fault: bool = False  # ... and the gate judged it the portal's, not this operation's


def judge_failure(
    unit: WorkUnit,
    plan: Plan,
    c: Classification,
    method: str,
    *,
    policy: RetryPolicy,
    rng: random.Random,
    how: Circumstances,
) -> Result:
    unit.record(c, method=method, at_ms=how.at_ms, secrets=how.secrets, portal=how.whole_request)
    if how.portal_fault:
        return _held(unit, plan, c, policy=policy, rng=rng, how=how)
    if c.counts_against_budget:
        unit.failures += 1
    else:
        unit.bounces += 1
    op = _CALL_OP[plan.call] if plan.call else unit.head.op
    if op is OpKind.UPDATE and unit.head.op is OpKind.UPSERT:
        op = OpKind.UPSERT  # an upsert whose entity was deleted in Bitrix24 creates it again
    d = decide(
        op,
        c,
        failures=unit.failures,
        bounces=unit.bounces,
        policy=policy,
        rng=rng,
        method_reset_in_s=how.method_reset_in_s,
    )
    outcome, state = _DECISION_OUTCOME[d.action]
    delay = _after_cut_off(d.delay_s, plan, c, how)
    return Result(
        unit,
        outcome,
        d.reason,
        d.detail,
        classification=c,
        call=plan.call,
        delay_s=delay if outcome is Outcome.RETRY else 0.0,
        mapping_state=state,
        stale=plan.stale,
    )


def _after_cut_off(delay: float, plan: Plan, c: Classification, how: Circumstances) -> float:
    """A create whose request may still be running waits for the portal's own cut-off first."""
    if how.sent_s is not None and plan.call is Call.CREATE and c.error_class is ErrorClass.NETWORK:
        return max(delay, how.portal_request_timeout_s - how.sent_s)
    return delay


def _held(
    unit: WorkUnit,
    plan: Plan,
    c: Classification,
    *,
    policy: RetryPolicy,
    rng: random.Random,
    how: Circumstances,
) -> Result:
    """The portal's fault, not the operation's: nothing spent, tried again after a backoff (the gate holds
    every worker back meanwhile when the portal is paused)."""
    held = sum(1 for h in unit.history if h.get("portal"))
    delay = _after_cut_off(full_jitter(held, policy.backoff_base_s, policy.backoff_max_s, rng), plan, c, how)
    return Result(
        unit,
        Outcome.RETRY,
        Reason.PORTAL_DOWN,
        f"{c.error_class.value}: the portal is failing; held (no budget spent)",
        classification=c,
        call=plan.call,
        delay_s=delay,
        stale=plan.stale,
    )
