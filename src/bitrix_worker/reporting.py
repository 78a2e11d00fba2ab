"""Telling the world how each unit ended: one log line per operation, and the metrics hooks.

Every line carries op, entity, key, stream id, attempt and error class (docs/operations.md), so an operator
can follow one order through the logs.

A batch is reported at once (``report_settled``): its lines one by one as before, its metrics in one
``WorkerEvents.outcomes`` call, so the subscribers add a count per series instead of being called twice
per operation. The line and the metric values are what reporting each operation on its own gave.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from .events import Outcomes, WorkerEvents
from .logs import batched_lines
from .outcomes import Outcome, Result, member_outcomes, stream_ms

RECLAIMED = "unit was reclaimed by another worker; its outcome is theirs"
"""The warning for a result whose settlement was refused: the unit's entries are another worker's now."""


def report(r: Result, now_ms: int, *, events: WorkerEvents, log: Any, successes: bool = True) -> None:
    """One settled result's lines and metrics (``report_settled`` of a batch of one)."""
    report_settled([r], [True], now_ms, events=events, log=log, successes=successes)


def report_settled(
    results: Sequence[Result],
    settled: Sequence[bool],
    now_ms: int,
    *,
    events: WorkerEvents,
    log: Any,
    successes: bool = True,
) -> None:
    """The lines of a batch's results, in order, and their operations' metrics; a result whose settlement
    was refused (``settled`` false: another worker reclaimed its unit) gets a warning and no metrics.

    ``successes``: log applied and skipped operations at info (False: at debug, to quiet a busy log)."""
    bound = log.bind()  # a structlog proxy otherwise finds its logger again at every call
    success = bound.info if successes else bound.debug
    batch = Outcomes()
    try:
        with batched_lines() if len(results) > 1 else contextlib.nullcontext():  # one write for them all
            for r, ok in zip(results, settled, strict=True):
                if not ok:
                    bound.warning(RECLAIMED, ident=r.unit.ident)
                elif r.outcome is Outcome.RETRY:
                    _retry_line(r, bound)
                else:
                    _final(r, now_ms, success, bound.error, batch)
    finally:
        if batch.latencies:
            events.outcomes(batch)


def _retry_line(r: Result, log: Any) -> None:
    head = r.unit.head
    c = r.classification
    log.info(
        "retry scheduled",
        op=head.op.value,
        entity=head.entity.value,
        key=head.key,
        stream_id=r.unit.origin,
        operations=len(r.unit.members),
        reason=r.text,
        delay_s=round(r.delay_s, 3),
        error_class=c.error_class.value if c and c.error_class else None,
        attempt=r.unit.attempts,
    )


def _final(r: Result, now_ms: int, success: Any, failure: Any, batch: Outcomes) -> None:
    if r.outcome is Outcome.APPLIED and len(r.unit.members) == 1 and not r.stale and not r.refused:
        _applied_alone(r, now_ms, success, batch)
    else:
        _members(r, now_ms, success, failure, batch)


def _applied_alone(r: Result, now_ms: int, success: Any, batch: Outcomes) -> None:
    """``_members`` of an applied unit of one operation, none of it stale or refused: nearly every unit.

    Why: no ``MemberOutcome`` to build and no per-member lookups, ~1 µs per operation; the line, count and
    latency are the same (tests/unit/test_cost_fast_paths.py compares the two). An enum member's ``_value_``
    is its ``value`` without the property's cost."""
    m = r.unit.members[0]
    operation = m.operation
    entity = operation.entity.value
    c = r.classification
    error_class = c.error_class if c else None
    key = (_APPLIED, r.reason, entity, error_class)
    counts = batch.counts
    counts[key] = counts.get(key, 0) + 1
    batch.latencies.append(max(0.0, (now_ms - stream_ms(m.origin)) / 1000))
    success(
        "applied",
        reason=r.detail or r.reason.sentence,
        bitrix_id=r.bitrix_id,
        op=operation.op._value_,
        entity=entity,
        key=operation.key,
        stream_id=m.origin,
        attempts=r.unit.attempts,
        error_class=error_class._value_ if error_class else None,
    )


_APPLIED = Outcome.APPLIED.value


def _members(r: Result, now_ms: int, success: Any, failure: Any, batch: Outcomes) -> None:
    """Each operation's line (``success``: applied and skipped, ``failure``: dead-lettered), its count and
    its latency into ``batch``. The line's keys are passed as such (a dict of them merged in costs more)."""
    members = r.unit.members
    attempts = r.unit.attempts
    counts, latencies = batch.counts, batch.latencies
    for f in member_outcomes(r):
        m = members[f.index]
        operation = m.operation
        entity = operation.entity.value
        c = r.classification_of(f.index)
        error_class = c.error_class if c else None
        outcome = f.outcome
        key = (outcome.value, f.reason, entity, error_class)
        counts[key] = counts.get(key, 0) + 1
        latencies.append(max(0.0, (now_ms - stream_ms(m.origin)) / 1000))
        op, cls = operation.op.value, error_class.value if error_class else None
        if outcome is Outcome.DEAD or outcome is Outcome.SKIPPED:
            say, event = (failure, "dead-lettered") if outcome is Outcome.DEAD else (success, "skipped")
            say(
                event,
                reason=f.text,
                op=op,
                entity=entity,
                key=operation.key,
                stream_id=m.origin,
                attempts=attempts,
                error_class=cls,
            )
        else:
            success(
                "applied",
                reason=f.text,
                bitrix_id=r.bitrix_id,
                op=op,
                entity=entity,
                key=operation.key,
                stream_id=m.origin,
                attempts=attempts,
                error_class=cls,
            )
