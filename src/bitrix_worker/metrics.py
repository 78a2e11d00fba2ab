"""Prometheus metrics fed by the worker's event hooks, on a registry owned by one worker (no global state).

Counters and histograms move with events; the queue gauges are read from Redis when scraped (at most once
per ``max_age_s``), so they describe the whole deployment, not this process. Every label value comes from a
small fixed vocabulary: reasons are ``Reason`` codes (never their sentences), methods are the ones we call
(anything else becomes ``other``). Keys, operation ids and free text never become labels.

A multi-portal process (``PrometheusEvents(portals=N)``) adds a ``portal`` label to its per-portal series:
the registry id (an id is a short name of letters, digits and ``._:-``, never a secret), for the first
``N`` portals this process serves; later ones, and any id not of that shape, are summed into
``portal="other"``. Its queue gauges describe each portal it serves now (the whole portal, whichever
processes hold its entries). A single-portal worker's series have no ``portal`` label (the documented
exposition).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .errors import BitrixWorkerError
from .events import Outcomes, WorkerEvents
from .gate import PortalGate
from .operations import ITEM_LABEL, PORTAL_ID_PATTERN, Entity, EntityName
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
_PORTAL_ID = re.compile(PORTAL_ID_PATTERN)
OTHER_PORTAL = "other"
GAUGE_READS_AT_ONCE = 32  # a scrape of a many-portal process reads this many portals' gauges at once
_TOKEN_RESULTS = frozenset({"refreshed", "reused", "failed", "invalid_grant", "refused"})
CALL_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 65)
E2E_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def _entity_label(entity: str) -> str:
    """A bounded label: the entity word, ``item`` for every smart process, ``none`` for anything else."""
    label = EntityName(entity).label
    return label if label in _ENTITIES else "none"


def method_label(method: str) -> str:
    return method if _METHOD.match(method) else "other"


class PrometheusEvents(WorkerEvents):
    """Worker events -> Prometheus. ``render()`` gives the exposition text for ``/metrics``.

    ``portals``: None for a single-portal worker (no ``portal`` label); a number for a multi-portal one: its
    per-portal series carry ``portal``, with at most that many distinct values (``for_portal``)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, portals: int | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.portal_cap = portals
        r = self.registry
        p = ["portal"] if portals is not None else []
        self.operations = Counter(
            "bitrix_worker_operations",
            "Operations that reached a final outcome.",
            [*p, "outcome", "reason", "entity", "error_class"],
            registry=r,
        )
        self.calls = Counter(
            "bitrix_worker_calls",
            "HTTP requests to Bitrix24 (a batch is one).",
            [*p, "method", "result"],
            registry=r,
        )
        self.call_duration = Histogram(
            "bitrix_worker_call_duration_seconds",
            "Bitrix24 request duration.",
            p,
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
            "bitrix_worker_retries_scheduled", "Retries scheduled.", [*p, "error_class"], registry=r
        )
        self.dead_lettered = Counter(
            "bitrix_worker_dead_lettered", "Operations dead-lettered.", [*p, "error_class"], registry=r
        )
        self.field_findings = Counter(
            "bitrix_worker_field_findings",
            "Validation findings in operations' fields, by kind and the action taken.",
            [*p, "kind", "action", "entity"],
            registry=r,
        )
        self.limiter_wait_s = Counter(
            "bitrix_worker_limiter_wait_seconds",
            "Time spent waiting for the shared rate limiter.",
            p,
            registry=r,
        )
        self.stream_length = Gauge("bitrix_worker_stream_length", "Entries in the stream.", p, registry=r)
        self.pending = Gauge("bitrix_worker_pending", "Entries read but not yet settled.", p, registry=r)
        self.scheduled = Gauge("bitrix_worker_scheduled", "Retries waiting in the schedule.", p, registry=r)
        self.dead_letter_size = Gauge("bitrix_worker_dead_letter_size", "Entries in the DLQ.", p, registry=r)
        self.waiting_for_refs = Gauge(
            "bitrix_worker_waiting_for_refs", "Operations waiting for a key they refer to.", p, registry=r
        )
        self.breaker_open = Gauge(
            "bitrix_worker_breaker_open", "1 while the portal's breaker is open.", p, registry=r
        )
        self.lag = Gauge(
            "bitrix_worker_lag_seconds", "Age of the oldest entry not yet settled (0: none).", p, registry=r
        )
        self.refresh_errors = Counter(
            "bitrix_worker_gauge_refresh_errors", "Failed reads of the queue gauges from Redis.", registry=r
        )
        self.token_refreshes = Counter(
            "bitrix_worker_token_refreshes",
            "OAuth access-token renewals by result (invalid_grant/refused: a portal is auth_broken, alert).",
            [*p, "result"],
            registry=r,
        )
        self._refreshed_at = -1e9
        self._labels: dict[str, str] = {}  # portal id -> its own label, at most ``portals`` of them
        self._gauge_labels: set[str] = set()  # portal labels whose queue gauges are shown
        # a multi-portal process's events that no portal's adapter carried (none expected) count as other
        self._own = _Labelled(self, () if portals is None else (OTHER_PORTAL,))

    # ---- portals ----------------------------------------------------------------------------------------

    def portal_label(self, portal: str) -> str:
        """The ``portal`` label value of ``portal``: its id while fewer than ``portals`` ids have one (first
        come, for the life of the process), else ``other``; so is an id not shaped like a registry id."""
        label = self._labels.get(portal)
        if label is not None:
            return label
        if (
            self.portal_cap is None
            or not _PORTAL_ID.fullmatch(portal)
            or len(self._labels) >= self.portal_cap
        ):
            return OTHER_PORTAL
        self._labels[portal] = portal
        return portal

    def for_portal(self, portal: str) -> WorkerEvents:
        """One portal loop's events, labelled ``portal_label`` (a single-portal worker: unlabelled)."""
        if self.portal_cap is None:
            return self
        return _Labelled(self, (self.portal_label(portal),))

    # ---- events -----------------------------------------------------------------------------------------

    def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
        self._own.outcome(outcome, reason, entity, error_class)

    def latency(self, enqueued_to_done_s: float) -> None:
        self.end_to_end.observe(enqueued_to_done_s)

    def outcomes(self, batch: Outcomes) -> None:
        self._own.outcomes(batch)

    def call(self, method: str, result: str, seconds: float) -> None:
        self._own.call(method, result, seconds)

    def retry(self, error_class: ErrorClass, delay_s: float) -> None:
        self._own.retry(error_class, delay_s)

    def limiter_wait(self, seconds: float) -> None:
        self._own.limiter_wait(seconds)

    def breaker(self, is_open: bool, reason: str) -> None:
        self._own.breaker(is_open, reason)

    def field_finding(self, kind: str, action: str, entity: str) -> None:
        self._own.field_finding(kind, action, entity)

    def token_refresh(self, portal: str, result: str) -> None:
        self._own.token_refresh(portal, result)

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

    async def refresh_portals(
        self, loops: Mapping[str, tuple[QueueReader, PortalGate]], *, max_age_s: float = 1.0
    ) -> None:
        """A multi-portal process's gauges, per portal label, for the portals it serves (``loops``: id ->
        its queue reader and gate): read ``GAUGE_READS_AT_ONCE`` portals at a time (one pipeline and one
        breaker read each), summed per label (``lag``: the largest; ``breaker_open``: how many are open)."""
        if time.monotonic() - self._refreshed_at < max_age_s:
            return
        try:
            now = await next(iter(loops.values()))[0].server_ms() if loops else 0
        except BitrixWorkerError:
            self.refresh_errors.inc()
            return
        at_once = asyncio.Semaphore(GAUGE_READS_AT_ONCE)

        async def read(reader: QueueReader, gate: PortalGate) -> tuple[float, ...] | None:
            async with at_once:
                try:
                    g = await reader.gauges(now)
                    shut = await gate.is_shut()
                except BitrixWorkerError:
                    return None
            waits, lag = g.waiting_for_refs, g.lag_s or 0.0
            return (g.stream_length, g.pending, g.scheduled, g.dead_letter_size, waits, lag, 1 if shut else 0)

        read_all = await asyncio.gather(*(read(r, g) for r, g in loops.values()))
        totals: dict[str, list[float]] = {}
        failed: set[str] = set()
        for pid, values in zip(loops, read_all, strict=True):
            label = self.portal_label(pid)
            if values is None:
                failed.add(label)
                continue
            total = totals.setdefault(label, [0.0] * 7)
            for i, v in enumerate(values):
                total[i] = max(total[i], v) if i == 5 else total[i] + v
        if failed:
            self.refresh_errors.inc()  # those portals keep their last values
        self._show_gauges({k: v for k, v in totals.items() if k not in failed}, keep=failed)
        self._refreshed_at = time.monotonic()

    def _show_gauges(self, totals: dict[str, list[float]], *, keep: set[str]) -> None:
        gauges = (
            self.stream_length,
            self.pending,
            self.scheduled,
            self.dead_letter_size,
            self.waiting_for_refs,
            self.lag,
            self.breaker_open,
        )
        for label, values in totals.items():
            for gauge, value in zip(gauges, values, strict=True):
                gauge.labels(label).set(value)
        for label in self._gauge_labels - set(totals) - keep:  # portals this process no longer serves
            for gauge in gauges:
                with contextlib.suppress(KeyError):
                    gauge.remove(label)
        self._gauge_labels = set(totals) | (self._gauge_labels & keep)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Labelled(WorkerEvents):
    """Events into ``metrics``' series with the label values ``portal`` first (empty: no portal label).
    Child series are cached per label set: ``labels()`` validates and locks on every call, and ``outcome``
    runs once per operation (the label values come from small fixed sets, so the cache stays small)."""

    def __init__(self, metrics: PrometheusEvents, portal: tuple[str, ...]) -> None:
        self._m = metrics
        self._p = portal
        self._outcomes: dict[tuple[str, Reason, str, ErrorClass | None], tuple[Counter, ...]] = {}
        self._duration: Histogram | None = None if portal else metrics.call_duration  # labelled on first use
        self._waited: Counter | None = None if portal else metrics.limiter_wait_s

    def for_portal(self, portal: str) -> WorkerEvents:
        return self._m.for_portal(portal)

    def outcome(self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None) -> None:
        for child in self._children(outcome, reason, entity, error_class):
            child.inc()

    def _children(
        self, outcome: str, reason: Reason, entity: str, error_class: ErrorClass | None
    ) -> tuple[Counter, ...]:
        ent = entity if entity in _ENTITIES else _entity_label(entity)  # a word is its own label
        key = (outcome, reason, ent, error_class)
        children = self._outcomes.get(key)
        if children is None:
            cls = error_class.value if error_class is not None else "none"
            children = (self._m.operations.labels(*self._p, outcome, reason.value, ent, cls),)
            if outcome == "dead_lettered":
                children += (self._m.dead_lettered.labels(*self._p, cls),)
            self._outcomes[key] = children
        return children

    def latency(self, enqueued_to_done_s: float) -> None:
        self._m.latency(enqueued_to_done_s)

    def outcomes(self, batch: Outcomes) -> None:
        """One ``inc(n)`` per series a batch touches; each latency observed on its own (the histogram's sum
        adds them one by one, as it always did, to the same float)."""
        for key, n in batch.counts.items():
            for child in self._children(*key):
                child.inc(n)
        observe = self._m.end_to_end.observe
        for seconds in batch.latencies:
            observe(seconds)

    def call(self, method: str, result: str, seconds: float) -> None:
        self._m.calls.labels(*self._p, method_label(method), result if result in _RESULTS else "other").inc()
        if self._duration is None:
            self._duration = self._m.call_duration.labels(*self._p)
        self._duration.observe(seconds)

    def retry(self, error_class: ErrorClass, delay_s: float) -> None:
        self._m.retries.labels(*self._p, error_class.value).inc()

    def limiter_wait(self, seconds: float) -> None:
        if self._waited is None:
            self._waited = self._m.limiter_wait_s.labels(*self._p)
        self._waited.inc(max(0.0, seconds))

    def breaker(self, is_open: bool, reason: str) -> None:
        if not self._p:
            self._m.breaker_open.set(1 if is_open else 0)
        elif self._p != (OTHER_PORTAL,):  # "other" sums several portals: the next scrape counts them
            self._m.breaker_open.labels(*self._p).set(1 if is_open else 0)

    def field_finding(self, kind: str, action: str, entity: str) -> None:
        self._m.field_findings.labels(
            *self._p,
            kind if kind in _KINDS else "other",
            action if action in _ACTIONS else "other",
            _entity_label(entity),
        ).inc()

    def token_refresh(self, portal: str, result: str) -> None:
        self._m.token_refreshes.labels(*self._p, result if result in _TOKEN_RESULTS else "other").inc()
