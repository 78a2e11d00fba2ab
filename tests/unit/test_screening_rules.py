"""Screening's decisions that need no I/O: what a refusal records, what a drop says, when a unit is held.

The I/O around them (the shared cache, the portal, delivery) is tested end to end in
tests/integration/test_screening.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from fieldschemas import portal_schema
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker.defaults import DESCRIPTION_MAX_CHARS
from bitrix_worker.operations import Entity, Operation, OpKind, encode_operation
from bitrix_worker.outcomes import Outcome
from bitrix_worker.plan import Call
from bitrix_worker.reasons import Reason
from bitrix_worker.records import attempt_entry, redelivery_entry
from bitrix_worker.screening import (
    HOLD_MAX_S,
    Failing,
    Screening,
    culprits,
    drop_note,
    portal_refused,
    rejection,
)
from bitrix_worker.taxonomy import Classification, ErrorClass, Execution
from bitrix_worker.units import Member, WorkUnit
from bitrix_worker.validation import FindingKind, validate

DEAL = portal_schema("deal")
SECRET = "s3cr3t-webhook-token"


def unit(fields: dict[str, Any]) -> WorkUnit:
    op = Operation(op=OpKind.UPDATE, entity=Entity.DEAL, key="k", fields=fields)
    return WorkUnit("deal:k", [Member("1-0", encode_operation(op), op)], ["1-0"])


def test_a_refusal_names_field_and_expectation_and_keeps_the_value_for_the_dead_letter() -> None:
    fields = {"UF_CRM_PAYMENT_METHD": "card-4242"}
    findings = tuple(validate("update", fields, DEAL))
    r = rejection(unit(fields), Call.UPDATE, findings, (SECRET,))
    assert (r.outcome, r.reason, r.call) == (Outcome.DEAD, Reason.INVALID_DATA, Call.UPDATE)
    assert r.detail.startswith("invalid data: unknown_field UF_CRM_PAYMENT_METHD: expected an existing field")
    assert "card-4242" not in r.detail  # the outcome record and counters never carry producer data
    assert r.classification is not None
    assert (r.classification.error_class, r.classification.execution) == (
        ErrorClass.INVALID_DATA,
        Execution.NOT_EXECUTED,
    )
    assert "'card-4242'" in r.classification.description  # the dead letter does


def test_a_secret_in_a_value_never_reaches_the_dead_letter() -> None:
    fields = {"UF_CRM_NOPE": f"https://portal.example/rest/1/{SECRET}/"}
    r = rejection(unit(fields), Call.UPDATE, tuple(validate("update", fields, DEAL)), (SECRET,))
    assert r.classification is not None
    assert SECRET not in r.classification.description
    assert SECRET not in r.detail


def test_several_findings_say_how_many_more() -> None:
    fields = {"UF_CRM_A1": 1, "UF_CRM_B2": 2, "CURRENCY_ID": "XXX", "CLOSED": "yes"}
    findings = tuple(validate("update", fields, DEAL))
    r = rejection(unit(fields), Call.UPDATE, findings, ())
    assert len(findings) == 4
    assert r.detail.endswith("(+3 more)")
    assert r.classification is not None
    assert r.classification.description.endswith("(+3 more)") or len(r.classification.description) == 200


@given(st.dictionaries(st.text(min_size=1, max_size=60), st.text(max_size=300), min_size=1, max_size=8))
def test_what_a_refusal_records_is_bounded_and_one_line_per_record(fields: dict[str, str]) -> None:
    findings = tuple(validate("update", fields, DEAL))
    if not findings:
        return
    r = rejection(unit(fields), Call.UPDATE, findings, (SECRET,))
    assert r.classification is not None
    assert len(r.detail) <= DESCRIPTION_MAX_CHARS
    assert len(r.classification.description) <= DESCRIPTION_MAX_CHARS


def test_a_drop_note_lists_each_dropped_field_once() -> None:
    findings = tuple(validate("create", {"UF_CRM_X1": 1, "CREATED_BY_ID": 3}, DEAL))
    dropped = tuple(f for f in findings if f.kind is not FindingKind.REQUIRED_MISSING)
    assert drop_note(Call.CREATE, dropped) == (
        "created without dropped fields: CREATED_BY_ID (read_only), UF_CRM_X1 (unknown_field)"
    )


def _attempt(error_class: ErrorClass) -> Any:
    return attempt_entry(Classification(error_class, Execution.EXECUTED), attempt=1, method="m", at_ms=1)


@pytest.mark.parametrize(
    ("history", "refused"),
    [
        ([], False),
        ([_attempt(ErrorClass.INVALID_DATA)], True),
        ([_attempt(ErrorClass.SERVER_ERROR)], False),
        ([_attempt(ErrorClass.INVALID_DATA), redelivery_entry(2, 5)], False),
        ([_attempt(ErrorClass.SERVER_ERROR), _attempt(ErrorClass.INVALID_DATA)], True),
    ],
)
def test_a_portal_refusal_of_the_last_attempt_asks_for_a_fresher_schema(history: Any, refused: bool) -> None:
    u = unit({"TITLE": "x"})
    u.history = list(history)
    assert portal_refused(u) is refused


@pytest.mark.parametrize(
    ("since", "transient", "held"),
    [
        (0.0, True, True),  # failing transiently for a moment: hold
        (HOLD_MAX_S - 1, True, True),
        (HOLD_MAX_S + 1, True, False),  # too long: send unvalidated
        (0.0, False, False),  # the portal refuses the schema methods: send unvalidated
    ],
)
def test_without_a_schema_units_are_held_while_the_failure_may_pass(
    since: float, transient: bool, held: bool
) -> None:
    now = 10_000.0
    failing = Failing(since=now - since, retry_at=now + 5, transient=transient)
    verdict = Screening.without_schema(failing, now)
    assert (verdict.hold_s > 0) is held


def test_a_refused_unit_keeps_its_stale_members_skipped_as_stale() -> None:
    from bitrix_worker.outcomes import member_outcomes

    u = unit({"UF_CRM_NOPE": 1})
    u.members.append(u.members[0])
    r = rejection(u, Call.UPDATE, tuple(validate("update", {"UF_CRM_NOPE": 1}, DEAL)), (), stale=(0,))
    assert [(m.outcome, m.reason) for m in member_outcomes(r)] == [
        (Outcome.SKIPPED, Reason.STALE),
        (Outcome.DEAD, Reason.INVALID_DATA),
    ]


def test_each_refused_finding_belongs_to_the_last_member_setting_its_field() -> None:
    ops = [
        Operation(op=OpKind.CREATE, entity=Entity.DEAL, key="k", fields={"TITLE": "a"}),
        Operation(op=OpKind.UPDATE, entity=Entity.DEAL, key="k", fields={"UF_CRM_NOPE": 1, "TITLE": "b"}),
        Operation(op=OpKind.UPDATE, entity=Entity.DEAL, key="k", fields={"UF_CRM_NOPE": 2}),
    ]
    u = WorkUnit("deal:k", [Member(f"1-{i}", encode_operation(o), o) for i, o in enumerate(ops)], [])
    merged = {"TITLE": "b", "UF_CRM_NOPE": 2}
    findings = validate("create", merged, DEAL)
    blamed = culprits(u, [0, 1, 2], findings)
    assert {i: [f.field for f in fs] for i, fs in blamed.items()} == {
        2: ["UF_CRM_NOPE"],  # the merged value is member 2's
        0: ["UF_CRM_ORDER_NO"],  # a required field nobody sets: the create's
    }
