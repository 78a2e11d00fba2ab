"""The vocabulary of outcomes shared by the classifier, the policy and the worker.

Two independent questions are answered for every Bitrix24 outcome (see docs/errors.md):
did the request possibly run (``Execution``), and which handling class it belongs to (``ErrorClass``).
These are plain values so that classification and policy stay pure and table-testable.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ErrorClass(StrEnum):
    NOT_FOUND = "not_found"
    INVALID_DATA = "invalid_data"
    AUTH = "auth"
    RATE_LIMITED = "rate_limited"
    METHOD_LIMITED = "method_limited"
    BLOCKED = "blocked"
    SERVER_ERROR = "server_error"
    NETWORK = "network"
    POISON = "poison"


class Execution(StrEnum):
    """Whether the request may have changed data in Bitrix24."""

    EXECUTED = "executed"  # Bitrix24 ran it and answered
    NOT_EXECUTED = "not_executed"  # refused before running: resending duplicates nothing
    AMBIGUOUS = "ambiguous"  # may or may not have run: a create must be reconciled first


#: Classes whose refusals never spend an operation's failure budget.
LIMIT_CLASSES = frozenset({ErrorClass.RATE_LIMITED, ErrorClass.METHOD_LIMITED, ErrorClass.BLOCKED})


@dataclass(frozen=True, slots=True)
class TimeInfo:
    """The ``time`` block of a Bitrix24 answer; drives the per-method operating budget."""

    operating: float | None = None
    operating_reset_at: float | None = None
    duration: float | None = None
    processing: float | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    """One classified failure. ``description`` is truncated and free of secrets."""

    error_class: ErrorClass
    execution: Execution
    http_status: int | None = None
    bitrix_code: str | None = None
    description: str = ""
    retry_after_s: float | None = None

    @property
    def counts_against_budget(self) -> bool:
        return self.error_class not in LIMIT_CLASSES
