"""Pure: turn the result of one unit into what must be written (settlement, mapping row, outcome records).

Every operation ends in exactly one of three outcomes, recorded in the outcomes stream and counters:
``applied``, ``skipped`` (with a reason) or ``dead_lettered`` (with its error and full history). A unit that
will be tried again is ``retry`` (not final). No I/O and no clock: the time of settling is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .operations import OpKind
from .plan import Call
from .reasons import Reason
from .records import dead_letter_error, outcome_record
from .taxonomy import Classification, ErrorClass
from .units import WorkUnit
from .values import Mapping, Settlement, State

DEPENDENCY = "dependency"
"""The dead-letter class of an operation held behind its key's dead-lettered create."""


class Outcome(StrEnum):
    APPLIED = "applied"
    SKIPPED = "skipped"
    DEAD = "dead_lettered"
    RETRY = "retry"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A member refused on its own before sending (field validation) while the rest of its unit went on."""

    text: str
    classification: Classification


@dataclass(slots=True)
class Result:
    unit: WorkUnit
    outcome: Outcome
    reason: Reason
    detail: str = ""  # the reason's sentence with its numbers, when it has any
    classification: Classification | None = None
    call: Call | None = None
    bitrix_id: int | None = None
    delay_s: float = 0.0
    mapping_state: State | None = None  # what to record in the mapping store
    stale: tuple[int, ...] = ()
    refused: dict[int, Refusal] = field(default_factory=dict)  # member index -> why it was refused alone

    def classification_of(self, index: int) -> Classification | None:
        refusal = self.refused.get(index)
        return refusal.classification if refusal is not None else self.classification

    @property
    def text(self) -> str:
        """The reason as the outcomes stream, counters and dead letters write it."""
        return self.detail or self.reason.sentence


@dataclass(slots=True)
class MemberOutcome:
    """Not frozen: two are built for every operation (its settlement, its report), and a frozen
    dataclass's ``__init__`` costs twice as much. Nothing changes one once built."""

    index: int
    outcome: Outcome
    reason: Reason
    text: str


_WAITING = (Reason.CREATE_FAILED, Reason.REF_UNRESOLVED)  # dead-lettered behind another dead letter


def _dead_class(reason: Reason) -> str | None:
    return DEPENDENCY if reason in _WAITING else None


def stream_ms(stream_id: str) -> int:
    """The enqueue time encoded in a stream id (``<ms>-<seq>``)."""
    head = stream_id.split("-", 1)[0]
    return int(head) if head.isdigit() else 0


def mapping_row(r: Result, token: int) -> Mapping | None:
    state = r.mapping_state
    if state is None and r.outcome is Outcome.DEAD and r.call is Call.CREATE:
        # ``unknown``: it may exist in Bitrix24, the next create of this key looks it up first; ``failed``:
        # nothing was made. Either way the key's later updates wait with it in the dead-letter stream.
        state = "unknown" if r.unit.ambiguous_before else "failed"
    if state is None:
        return None
    members = r.unit.members
    op = members[0].operation
    version = None
    if r.mapping_state == "active" and len(members) == 1 and not r.refused:  # the common case
        version = op.version
    elif r.mapping_state == "active":  # a refused member's version was never applied
        applied = [m.operation.version for i, m in enumerate(members) if i not in r.refused]
        version = max((v for v in applied if v is not None), default=None)
    return Mapping(str(op.entity), op.key, r.bitrix_id, version, state, token)


def member_outcomes(r: Result) -> list[MemberOutcome]:
    """The outcome of every operation of a final result (members older than the stored version are stale)."""
    same = MemberOutcome(0, r.outcome, r.reason, r.text)
    if not r.stale and len(r.unit.members) == 1:  # the common case, built once
        return [same]
    return [
        MemberOutcome(i, Outcome.SKIPPED, Reason.STALE, Reason.STALE.sentence)
        if i in r.stale
        else MemberOutcome(i, Outcome.DEAD, Reason.INVALID_DATA, r.refused[i].text)
        if i in r.refused
        else MemberOutcome(i, r.outcome, r.reason, r.text)
        for i in range(len(r.unit.members))
    ]


_COUNTED = {outcome: f"outcome:{outcome.value}" for outcome in Outcome}


def settlement(r: Result, at_ms: int) -> Settlement:
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
    if r.outcome is Outcome.APPLIED and len(u.members) == 1 and not r.stale and not r.refused:
        return _applied_alone(r, at_ms)
    return _settled(r, at_ms)


def _settled(r: Result, at_ms: int) -> Settlement:
    """The final settlement of any result: every member's record, counters and dead letter."""
    u = r.unit
    counters: dict[str, int] = {}
    dead: list[list[str]] = []
    records: list[list[str]] = []
    attempts = u.attempts
    for f in member_outcomes(r):  # one pass: counters, dead letters and records in the order they had
        member, outcome, c = u.members[f.index], f.outcome, r.classification_of(f.index)
        counters[_COUNTED[outcome]] = counters.get(_COUNTED[outcome], 0) + 1
        if outcome is not Outcome.APPLIED:
            named = f"{outcome.value}:{f.text}"
            counters[named] = counters.get(named, 0) + 1
        if outcome is Outcome.DEAD:
            dead.append(
                ["payload", member.payload, "error", _dead_letter(r, f.text, member.origin, c, at_ms)]
            )
        records.append(
            outcome_record(
                stream_id=member.origin,
                ident=u.ident,
                op=member.operation.op.value,
                outcome=outcome.value,
                reason=f.text,
                code=f.reason.value,
                attempts=attempts,
                at_ms=at_ms,
                error_class=c.error_class.value if c else _dead_class(f.reason),
                bitrix_id=r.bitrix_id,
            )
        )
    return Settlement(
        ids=list(u.stream_ids),
        ident=u.ident,
        action="dead" if dead else "done",
        dead=dead,
        outcomes=records,
        counters=counters,
    )


def _applied_alone(r: Result, at_ms: int) -> Settlement:
    """``settlement`` of an applied unit of one operation, none of it stale or refused: nearly every unit.

    Why: the general loop builds a ``MemberOutcome``, looks the member's classification up and counts into
    a dict, ~1 µs per operation for what here is one record and one counter (tests/unit/test_outcomes.py
    compares the two paths). Enum members' ``_value_`` is their ``value`` without the property's cost."""
    u = r.unit
    member = u.members[0]
    c = r.classification
    record = outcome_record(
        stream_id=member.origin,
        ident=u.ident,
        op=member.operation.op._value_,
        outcome="applied",
        reason=r.detail or r.reason.sentence,
        code=r.reason._value_,
        attempts=u.attempts,
        at_ms=at_ms,
        error_class=c.error_class._value_ if c else _dead_class(r.reason),
        bitrix_id=r.bitrix_id,
    )
    return Settlement(
        ids=list(u.stream_ids), ident=u.ident, action="done", outcomes=[record], counters={_APPLIED: 1}
    )


_APPLIED = _COUNTED[Outcome.APPLIED]


def _dead_letter(r: Result, text: str, origin: str, c: Classification | None, at_ms: int) -> str:
    u = r.unit
    return dead_letter_error(
        reason=text,
        history=u.history,
        stream_id=origin,
        at_ms=at_ms,
        classification=c,
        error_class=_dead_class(r.reason) or ErrorClass.POISON.value,
        may_have_run=u.ambiguous_before and u.head.op in (OpKind.CREATE, OpKind.UPSERT),
    )
