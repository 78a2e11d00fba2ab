"""Pure: when a worker that holds entries counts as stuck, for ``/healthz`` and ``/readyz``.

A wedged batch (a request that never ends, a lock never released) or a wedged loop keeps answering the HTTP
endpoints while its entries stay pending and fresh (the heartbeat touches them), so nothing reclaims them.
Progress is anything that shows the work moving: a request to the portal finished (whatever its result), an
operation reached its outcome or was scheduled for a retry, a batch ended, new entries were claimed. A
worker that holds entries and has shown none of it for longer than ``stall_after_s`` is reported unhealthy,
so an orchestrator restarts it and another worker reclaims what it held.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .events import Outcomes, WorkerEvents
from .reasons import Reason
from .taxonomy import ErrorClass


class Progress(WorkerEvents):
    """Remembers when the worker last made progress (monotonic seconds)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at = clock()

    def touch(self) -> None:
        self.at = self._clock()

    def since_s(self) -> float:
        return self._clock() - self.at

    def call(self, method: str, result: str, seconds: float) -> None:
        self.touch()

    def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
        self.touch()

    def outcomes(self, batch: Outcomes) -> None:
        self.touch()  # once for the batch, not once per operation

    def retry(self, error_class: ErrorClass, delay_s: float) -> None:
        self.touch()


def stuck_reason(holding: int, idle_s: float, bound_s: float) -> str | None:
    """Why the worker is stuck, or None: it holds entries and made no progress for longer than the bound."""
    if holding == 0 or idle_s <= bound_s:
        return None
    return (
        f"stuck: holds {holding} entries and made no progress for {idle_s:.0f} s "
        f"(more than BITRIX_WORKER_STALL_AFTER_S={bound_s:g})"
    )
