"""Pure decisions: what to do with one failed attempt of one unit of work.

``decide`` is a function of (operation kind, classification, attempts so far, policy, randomness). It never
does I/O; the worker performs the returned ``Decision``, so the taxonomy is testable as a table.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

from .config import Settings
from .operations import OpKind
from .reasons import Reason
from .taxonomy import Classification, ErrorClass


class Action(StrEnum):
    RETRY = "retry"  # schedule another attempt after ``delay_s``
    DEAD_LETTER = "dead_letter"  # give up; keep the payload and its history
    SKIP = "skip"  # nothing to do: acknowledged with a reason (e.g. deal deleted in Bitrix24)
    DONE = "done"  # the goal is already reached (delete of something already gone)
    RECREATE = "recreate"  # the entity was deleted in Bitrix24 and the settings ask to create it again


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason
    detail: str = ""  # the reason's sentence with its numbers, when it has any
    delay_s: float = 0.0
    counts_as_failure: bool = True

    @property
    def text(self) -> str:
        return self.detail or self.reason.sentence


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The numbers ``decide`` needs, lifted out of Settings so tests can build them directly."""

    budgets: dict[ErrorClass, int]
    not_found_create_budget: int
    backoff_base_s: float
    backoff_max_s: float
    rate_limit_base_s: float
    method_limit_min_s: float = 10.0
    blocked_pause_s: float = 600.0
    recreate_deleted: bool = False

    @classmethod
    def from_settings(cls, s: Settings) -> RetryPolicy:
        budgets = {c: s.retry_budget(c, creating=False) for c in ErrorClass}
        return cls(
            budgets=budgets,
            not_found_create_budget=s.retries_not_found_create,
            backoff_base_s=s.backoff_base_s,
            backoff_max_s=s.backoff_max_s,
            rate_limit_base_s=s.rate_limit_backoff_base_s,
            blocked_pause_s=s.blocked_cooldown_s,
            recreate_deleted=s.recreate_deleted,
        )

    def budget(self, error_class: ErrorClass, *, creating: bool) -> int:
        if error_class is ErrorClass.NOT_FOUND and creating:
            return self.not_found_create_budget
        return self.budgets[error_class]


def full_jitter(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """AWS "full jitter": uniform in [0, min(cap, base * 2**(attempt-1))]; spreads herds of retries."""
    ceiling = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    return rng.uniform(0, ceiling)


def equal_jitter(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Half fixed, half random: a refused request must wait at least half the step before trying again."""
    ceiling = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def refusal_delay(refusals: int, c: Classification, policy: RetryPolicy, rng: random.Random) -> float | None:
    """How long to wait after the ``refusals``-th refusal by the portal's request limit, or None once the
    operation's cap (``retries_rate_limited``) is spent.

    The one meaning of that setting: the refusals an operation may meet in all, whether they are waited out
    inside one request (the sender) or across scheduled retries (``decide``).
    """
    if refusals > policy.budgets[ErrorClass.RATE_LIMITED]:
        return None
    delay = equal_jitter(refusals, policy.rate_limit_base_s, policy.backoff_max_s, rng)
    return max(delay, c.retry_after_s or 0.0)


def decide(
    op: OpKind,
    c: Classification,
    *,
    failures: int,
    bounces: int,
    policy: RetryPolicy,
    rng: random.Random,
    method_reset_in_s: float | None = None,
) -> Decision:
    """Decide after one failed attempt.

    ``failures`` counts budget-spending failures *including* this one; ``bounces`` counts limit refusals
    including this one. Limit refusals never spend the failure budget.
    """
    creating = op is OpKind.CREATE
    cls = c.error_class
    if cls is ErrorClass.NOT_FOUND and not creating:
        if op is OpKind.DELETE:
            return Decision(Action.DONE, Reason.ALREADY_DELETED)
        if policy.recreate_deleted or op is OpKind.UPSERT:
            return Decision(Action.RECREATE, Reason.RECREATING)
        if failures > policy.budget(cls, creating=False):
            return Decision(Action.SKIP, Reason.DELETED_IN_BITRIX24)
    if cls in (ErrorClass.RATE_LIMITED, ErrorClass.METHOD_LIMITED, ErrorClass.BLOCKED):
        return _limit_decision(c, bounces=bounces, policy=policy, rng=rng, reset_in_s=method_reset_in_s)
    budget = policy.budget(cls, creating=creating)
    if failures > budget:
        return Decision(
            Action.DEAD_LETTER, Reason.BUDGET_SPENT, f"{cls.value}: retry budget of {budget} spent"
        )
    delay = full_jitter(failures, policy.backoff_base_s, policy.backoff_max_s, rng)
    if c.retry_after_s is not None:
        delay = max(delay, c.retry_after_s)
    return Decision(Action.RETRY, Reason.RETRYING, f"{cls.value}: retry {failures} of {budget}", delay)


def _limit_decision(
    c: Classification, *, bounces: int, policy: RetryPolicy, rng: random.Random, reset_in_s: float | None
) -> Decision:
    cls = c.error_class
    budget = policy.budgets[cls]
    if bounces > budget:
        return Decision(
            Action.DEAD_LETTER,
            Reason.REFUSAL_CAP,
            f"{cls.value}: refused {bounces} times, cap is {budget}",
            counts_as_failure=False,
        )
    if cls is ErrorClass.BLOCKED:
        return Decision(Action.RETRY, Reason.BLOCKED, delay_s=policy.blocked_pause_s, counts_as_failure=False)
    if cls is ErrorClass.METHOD_LIMITED:
        wait = reset_in_s if reset_in_s is not None and reset_in_s > 0 else policy.method_limit_min_s
        wait = max(wait, equal_jitter(bounces, policy.rate_limit_base_s, policy.backoff_max_s, rng))
        return Decision(Action.RETRY, Reason.METHOD_RESET_WAIT, delay_s=wait, counts_as_failure=False)
    delay = refusal_delay(bounces, c, policy, rng) or 0.0
    return Decision(Action.RETRY, Reason.RATE_LIMITED, delay_s=delay, counts_as_failure=False)
