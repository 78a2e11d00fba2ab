"""Telling the world how each unit ended: one log line per operation, and the metrics hooks.

Every line carries op, entity, key, stream id, attempt and error class (docs/operations.md), so an operator
can follow one order through the logs.
"""

from __future__ import annotations

from typing import Any

from .events import WorkerEvents
from .outcomes import Outcome, Result, member_outcomes, stream_ms


def report(r: Result, now_ms: int, *, events: WorkerEvents, log: Any, successes: bool = True) -> None:
    """``successes``: log applied and skipped operations at info (False: at debug, to quiet a busy log)."""
    error_class = r.classification.error_class if r.classification else None
    cls = error_class.value if error_class else None
    if r.outcome is Outcome.RETRY:
        head = r.unit.head
        log.info(
            "retry scheduled",
            op=head.op.value,
            entity=head.entity.value,
            key=head.key,
            stream_id=r.unit.origin,
            operations=len(r.unit.members),
            reason=r.text,
            delay_s=round(r.delay_s, 3),
            error_class=cls,
            attempt=r.unit.attempts,
        )
        return
    attempts = r.unit.attempts
    for f in member_outcomes(r):
        m = r.unit.members[f.index]
        operation = m.operation
        entity = operation.entity.value
        c = r.classification_of(f.index)
        events.outcome(f.outcome.value, f.reason, entity, c.error_class if c else None)
        events.latency(max(0.0, (now_ms - stream_ms(m.origin)) / 1000))
        fields = {
            "op": operation.op.value,
            "entity": entity,
            "key": operation.key,
            "stream_id": m.origin,
            "attempts": attempts,
            "error_class": c.error_class.value if c else None,
        }
        if f.outcome is Outcome.DEAD:
            log.error("dead-lettered", reason=f.text, **fields)
        elif f.outcome is Outcome.SKIPPED:
            (log.info if successes else log.debug)("skipped", reason=f.text, **fields)
        else:
            (log.info if successes else log.debug)("applied", reason=f.text, bitrix_id=r.bitrix_id, **fields)
