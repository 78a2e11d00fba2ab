"""Pure: turn the result of one unit into what must be written (settlement, mapping row, outcome records).

Every operation ends in exactly one of three outcomes, recorded in the outcomes stream and counters:
``applied``, ``skipped`` (with a reason) or ``dead_lettered`` (with its error and full history). A unit that
will be tried again is ``retry`` (not final).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from .mapping import Mapping
from .plan import Call
from .redis.streams import Settlement
from .taxonomy import Classification
from .units import WorkUnit, now_ms


class Outcome(StrEnum):
    APPLIED = "applied"
    SKIPPED = "skipped"
    DEAD = "dead_lettered"
    RETRY = "retry"


@dataclass(slots=True)
class Result:
    unit: WorkUnit
    outcome: Outcome
    reason: str
    classification: Classification | None = None
    call: Call | None = None
    bitrix_id: int | None = None
    delay_s: float = 0.0
    mapping_state: Literal["active", "deleted", "unknown"] | None = (
        None  # what to record in the mapping store
    )
    stale: tuple[int, ...] = ()
    trip: bool = False  # auth: open the portal's circuit breaker
    pause_s: float = 0.0  # blocked: pause the whole portal this long


def stream_ms(stream_id: str) -> int:
    """The enqueue time encoded in a stream id (``<ms>-<seq>``)."""
    head = stream_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def mapping_row(r: Result, token: int) -> Mapping | None:
    state = r.mapping_state
    if state is None and r.outcome is Outcome.DEAD and r.call is Call.CREATE and r.unit.ambiguous_before:
        state = "unknown"  # it may exist in Bitrix24: the next create of this key must look it up first
    if state is None:
        return None
    op = r.unit.head
    version = r.unit.max_version() if r.mapping_state == "active" else None
    return Mapping(op.entity.value, op.key, r.bitrix_id, version, state, token)


def dead_letter_error(r: Result, *, stream_id: str, at_ms: int) -> str:
    c = r.classification
    last = r.unit.history[-1] if r.unit.history else {}
    return json.dumps(
        {
            "class": c.error_class.value if c else last.get("class", "poison"),
            "http_status": c.http_status if c else last.get("http_status"),
            "bitrix_code": c.bitrix_code if c else last.get("bitrix_code"),
            "description": c.description if c else r.reason,
            "reason": r.reason,
            "attempts": r.unit.attempts,
            "history": r.unit.history,
            "stream_id": stream_id,
            "dead_lettered_at": at_ms,
        },
        separators=(",", ":"),
    )


def _outcome_record(r: Result, index: int, outcome: str, reason: str, at_ms: int) -> list[str]:
    m = r.unit.members[index]
    c = r.classification
    record = [
        "stream_id", m.origin,
        "ident", r.unit.ident,
        "op", m.operation.op.value,
        "outcome", outcome,
        "reason", reason,
        "attempts", str(r.unit.attempts),
        "at_ms", str(at_ms),
    ]  # fmt: skip
    if c is not None:
        record += ["class", c.error_class.value]
    if r.bitrix_id is not None:
        record += ["bitrix_id", str(r.bitrix_id)]
    return record


def member_outcomes(r: Result) -> list[tuple[int, str, str]]:
    """(member index, outcome, reason) for every operation of a final result."""
    out = []
    for i in range(len(r.unit.members)):
        if i in r.stale:
            out.append((i, Outcome.SKIPPED.value, "stale"))
        else:
            out.append((i, r.outcome.value, r.reason))
    return out


def settlement(r: Result) -> Settlement:
    u = r.unit
    if r.outcome is Outcome.RETRY:
        return Settlement(
            ids=list(u.stream_ids),
            ident=u.ident,
            action="retry",
            delay_ms=max(0, int(r.delay_s * 1000)),
            origin=u.origin,
            unit=u.to_json(),
            counters={"retries": 1},
        )
    at = now_ms()
    finals = member_outcomes(r)
    counters: dict[str, int] = {}
    for _, outcome, reason in finals:
        counters[f"outcome:{outcome}"] = counters.get(f"outcome:{outcome}", 0) + 1
        if outcome != Outcome.APPLIED.value:
            counters[f"{outcome}:{reason}"] = counters.get(f"{outcome}:{reason}", 0) + 1
    dead: list[list[str]] = []
    if r.outcome is Outcome.DEAD:
        for i, outcome, _ in finals:
            if outcome == Outcome.DEAD.value:
                m = u.members[i]
                dead.append(
                    ["payload", m.payload, "error", dead_letter_error(r, stream_id=m.origin, at_ms=at)]
                )
    return Settlement(
        ids=list(u.stream_ids),
        ident=u.ident,
        action="dead" if dead else "done",
        dead=dead,
        outcomes=[_outcome_record(r, i, o, reason, at) for i, o, reason in finals],
        counters=counters,
    )


def summary(results: list[Result]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.outcome.value] = counts.get(r.outcome.value, 0) + len(r.unit.members)
    return counts
