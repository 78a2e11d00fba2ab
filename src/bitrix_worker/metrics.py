"""Prometheus metrics fed by the worker's event hooks, on a registry owned by one worker (no global state).

Counters and histograms move with events; the queue gauges are read from Redis when scraped (at most once
per ``max_age_s``), so they describe the whole deployment, not this process. Every label value comes from a
small fixed vocabulary: reasons are ``Reason`` codes (never their sentences), methods are the ones we call
(anything else becomes ``other``). Keys, ids and free text never become labels.
"""

from __future__ import annotations

import re
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import BitrixWorkerError
from .events import WorkerEvents
from .gate import PortalGate
from .operations import ITEM_LABEL, Entity, EntityName
from .reasons import Reason
from .redis.gauges import QueueReader
from .taxonomy import ErrorClass
from .validation import SCHEMA_UNAVAILABLE, FindingAction, FindingKind

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_ENTITY_NAMES = "|".join(e.value for e in Entity)
_METHOD = re.compile(
    rf"^(batch|crm\.({_ENTITY_NAMES}|item)\.(add|update|delete|list|get|fields)|crm\.item\.productrow\.(set|list))$"
)
_ENTITIES = frozenset({*(e.value for e in Entity), ITEM_LABEL})  # item:<entityTypeId> counts as "item"
_RESULTS = frozenset({"ok", *(c.value for c in ErrorClass)})
_KINDS = frozenset(k.value for k in FindingKind) | {SCHEMA_UNAVAILABLE}
_ACTIONS = frozenset(a.value for a in FindingAction)
CALL_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 65)
E2E_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _entity_label(entity: str) -> str:
    """A bounded label: the entity word, ``item`` for every smart process, ``none`` for anything else."""
    label = EntityName(entity).label
    return label if label in _ENTITIES else "none"


def method_label(method: str) -> str:
    return method if _METHOD.match(method) else "other"


class PrometheusEvents(WorkerEvents):
    """Worker events -> Prometheus. ``render()`` gives the exposition text for ``/metrics``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.operations = Counter(
            "bitrix_worker_operations",
            "Operations that reached a final outcome.",
            ["outcome", "reason", "entity", "error_class"],
            registry=r,
        )
        self.calls = Counter(
            "bitrix_worker_calls",
            "HTTP requests to Bitrix24 (a batch is one).",
            ["method", "result"],
            registry=r,
        )
        self.call_duration = Histogram(
            "bitrix_worker_call_duration_seconds",
            "Bitrix24 request duration.",
            buckets=CALL_BUCKETS_S,
            registry=r,
        )
        self.end_to_end = Histogram(
            "bitrix_worker_end_to_end_seconds",
            "Enqueue to final outcome, per operation.",
            buckets=E2E_BUCKETS_S,
            registry=r,
        )
        self.retries = Counter(
            "bitrix_worker_retries_scheduled", "Retries scheduled.", ["error_class"], registry=r
        )
        self.dead_lettered = Counter(
            "bitrix_worker_dead_lettered", "Operations dead-lettered.", ["error_class"], registry=r
        )
        self.field_findings = Counter(
            "bitrix_worker_field_findings",
            "Validation findings in operations' fields, by kind and the action taken.",
            ["kind", "action", "entity"],
            registry=r,
        )
        self.limiter_wait_s = Counter(
            "bitrix_worker_limiter_wait_seconds",
            "Time spent waiting for the shared rate limiter.",
            registry=r,
        )
        self.stream_length = Gauge("bitrix_worker_stream_length", "Entries in the stream.", registry=r)
        self.pending = Gauge("bitrix_worker_pending", "Entries read but not yet settled.", registry=r)
        self.scheduled = Gauge("bitrix_worker_scheduled", "Retries waiting in the schedule.", registry=r)
        self.dead_letter_size = Gauge("bitrix_worker_dead_letter_size", "Entries in the DLQ.", registry=r)
        self.waiting_for_refs = Gauge(
            "bitrix_worker_waiting_for_refs", "Operations waiting for a key they refer to.", registry=r
        )
        self.breaker_open = Gauge(
            "bitrix_worker_breaker_open", "1 while the portal's breaker is open.", registry=r
        )
        self.lag = Gauge(
            "bitrix_worker_lag_seconds", "Age of the oldest entry not yet settled (0: none).", registry=r
        )
        self.refresh_errors = Counter(
            "bitrix_worker_gauge_refresh_errors", "Failed reads of the queue gauges from Redis.", registry=r
        )
        self.token_refreshes = Counter(
            "bitrix_worker_token_refreshes",
            "OAuth access-token renewals by result (invalid_grant/refused: a portal is auth_broken, alert).",
            ["result"],
            registry=r,
        )
        self._refreshed_at = -1e9
        # per label set, the child Counter: ``labels()`` validates and locks on every call, and ``outcome``
        # runs once per operation (the label values come from small fixed sets, so this stays small)
        self._outcome_children: dict[tuple[str, Reason, str, ErrorClass | None], tuple[Counter, ...]] = {}

    # ---- events -----------------------------------------------------------------------------------------

    def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
        ent = entity if entity in _ENTITIES else _entity_label(entity)  # a word is its own label
        key = (outcome, reason, ent, error_class)
        children = self._outcome_children.get(key)
        if children is None:
            cls = error_class.value if error_class is not None else "none"
            children = (self.operations.labels(outcome, reason.value, ent, cls),)
            if outcome == "dead_lettered":
                children += (self.dead_lettered.labels(cls),)
            self._outcome_children[key] = children
        for child in children:
            child.inc()

    def latency(self, enqueued_to_done_s: float) -> None:
        self.end_to_end.observe(enqueued_to_done_s)

    def call(self, method: str, result: str, seconds: float) -> None:
        self.calls.labels(method_label(method), result if result in _RESULTS else "other").inc()
        self.call_duration.observe(seconds)

    def retry(self, error_class: ErrorClass, delay_s: float) -> None:
        self.retries.labels(error_class.value).inc()

    def limiter_wait(self, seconds: float) -> None:
        self.limiter_wait_s.inc(max(0.0, seconds))

    def breaker(self, is_open: bool, reason: str) -> None:
        self.breaker_open.set(1 if is_open else 0)

    def field_finding(self, kind: str, action: str, entity: str) -> None:
        self.field_findings.labels(
            kind if kind in _KINDS else "other",
            action if action in _ACTIONS else "other",
            _entity_label(entity),
        ).inc()

    def token_refresh(self, portal: str, result: str) -> None:
        known = ("refreshed", "reused", "failed", "invalid_grant", "refused")
        self.token_refreshes.labels(result if result in known else "other").inc()

    # ---- gauges and exposition --------------------------------------------------------------------------

    async def refresh(self, reader: QueueReader, gate: PortalGate, *, max_age_s: float = 1.0) -> None:
        """Read the queue gauges from Redis unless they are fresher than ``max_age_s``."""
        if time.monotonic() - self._refreshed_at < max_age_s:
            return
        try:
            g = await reader.gauges()
            is_open = await gate.is_shut()
        except BitrixWorkerError:
            self.refresh_errors.inc()  # the scrape still answers, with the last values
            return
        self.stream_length.set(g.stream_length)
        self.pending.set(g.pending)
        self.scheduled.set(g.scheduled)
        self.dead_letter_size.set(g.dead_letter_size)
        self.waiting_for_refs.set(g.waiting_for_refs)
        self.lag.set(g.lag_s or 0.0)
        self.breaker_open.set(1 if is_open else 0)
        self._refreshed_at = time.monotonic()

    def render(self) -> bytes:
        return generate_latest(self.registry)
