"""Hooks the worker emits; metrics and the demo's progress view subscribe (stamina-style instrumentation).

The worker never imports Prometheus: it calls these methods, whose default bodies do nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .reasons import Reason
from .taxonomy import ErrorClass

OutcomeKey = tuple[str, Reason, str, ErrorClass | None]
"""What ``WorkerEvents.outcome`` is told of one operation: outcome, reason, entity and error class."""


@dataclass(slots=True)
class Outcomes:
    """A batch's operations that reached a final outcome (``reporting.report_settled``): how many had each
    ``OutcomeKey``, and each one's enqueue-to-outcome latency, in order."""

    counts: dict[OutcomeKey, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)


class WorkerEvents:
    """Subclass and override what you need. Calls are synchronous and must be cheap."""

    def for_portal(self, portal: str) -> WorkerEvents:
        """The subscriber a multi-portal worker hands one portal's loop (``fleet.py``): by default this one,
        so a subscriber that does not care which portal an event is about sees every portal's events.
        ``PrometheusEvents`` answers an adapter that labels the portal's series."""
        return self

    def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
        """One operation ended: applied, skipped or dead_lettered."""

    def latency(self, enqueued_to_done_s: float) -> None:
        """End-to-end latency of one operation (enqueued -> final outcome)."""

    def outcomes(self, batch: Outcomes) -> None:
        """A batch's final outcomes at once. By default an ``outcome`` call per operation and then a
        ``latency`` call per operation; a subscriber that counts overrides it to add each count once (the
        worker reports a batch this way: per operation, the calls cost more than the counting)."""
        for (outcome, reason, entity, error_class), n in batch.counts.items():
            for _ in range(n):
                self.outcome(outcome, reason, entity, error_class)
        for seconds in batch.latencies:
            self.latency(seconds)

    def call(self, method: str, result: str, seconds: float) -> None:
        """One HTTP request to Bitrix24; ``result`` is ``ok`` or an error class."""

    def retry(self, error_class: ErrorClass, delay_s: float) -> None:
        """A unit was scheduled for another attempt."""

    def limiter_wait(self, seconds: float) -> None:
        """Time spent waiting for the shared rate limiter before a request."""

    def breaker(self, is_open: bool, reason: str) -> None:
        """The portal's circuit breaker opened or closed."""

    def field_finding(self, kind: str, action: str, entity: str) -> None:
        """Validation found something in an operation's fields (``validation.FindingKind`` / ``FindingAction``
        values); ``action`` is what was done about it: reject, warn or drop."""

    def token_refresh(self, portal: str, result: str) -> None:
        """An OAuth access token was renewed: ``refreshed`` (this process called the token endpoint),
        ``reused`` (another process had), ``failed`` (transient) or ``invalid_grant``/``refused`` (the
        portal is now auth_broken and paused: an alert)."""


class EventFanout(WorkerEvents):
    """Sends every event to several subscribers."""

    def __init__(self, *subscribers: WorkerEvents) -> None:
        self._subs = subscribers

    def for_portal(self, portal: str) -> WorkerEvents:
        return EventFanout(*(s.for_portal(portal) for s in self._subs))

    def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
        for s in self._subs:
            s.outcome(outcome, reason, entity, error_class)

    def latency(self, enqueued_to_done_s: float) -> None:
        for s in self._subs:
            s.latency(enqueued_to_done_s)

    def outcomes(self, batch: Outcomes) -> None:
        for s in self._subs:
            s.outcomes(batch)

    def call(self, method: str, result: str, seconds: float) -> None:
        for s in self._subs:
            s.call(method, result, seconds)

    def retry(self, error_class: ErrorClass, delay_s: float) -> None:
        for s in self._subs:
            s.retry(error_class, delay_s)

    def limiter_wait(self, seconds: float) -> None:
        for s in self._subs:
            s.limiter_wait(seconds)

    def breaker(self, is_open: bool, reason: str) -> None:
        for s in self._subs:
            s.breaker(is_open, reason)

    def field_finding(self, kind: str, action: str, entity: str) -> None:
        for s in self._subs:
            s.field_finding(kind, action, entity)

    def token_refresh(self, portal: str, result: str) -> None:
        for s in self._subs:
            s.token_refresh(portal, result)


@dataclass
class RunSummary:
    """What one ``run`` did: operations by final outcome."""

    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())


class Tally(WorkerEvents):
    """Counts final outcomes into a RunSummary."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary = summary

    def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
        self.summary.outcomes[outcome] += 1

    def outcomes(self, batch: Outcomes) -> None:
        tally = self.summary.outcomes
        for (outcome, *_), n in batch.counts.items():
            tally[outcome] += n
