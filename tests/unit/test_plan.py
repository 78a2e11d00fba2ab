"""Mapping-store state x operation kind -> the call (or none) a unit needs."""

from __future__ import annotations

import pytest

from bitrix_worker.mapping import Mapping
from bitrix_worker.operations import Entity, Operation, OpKind, encode_operation
from bitrix_worker.plan import Call, plan_unit
from bitrix_worker.reasons import Reason
from bitrix_worker.units import Member, WorkUnit


def unit(*ops: tuple[OpKind, dict[str, object], int | None], deliveries: int = 1) -> WorkUnit:
    members = []
    for i, (kind, fields, version) in enumerate(ops):
        op = Operation(op=kind, entity=Entity.DEAL, key="k", fields=fields, version=version)
        members.append(Member(f"1-{i}", encode_operation(op), op))
    return WorkUnit("deal:k", members, [m.origin for m in members], deliveries=deliveries)


ACTIVE = Mapping("deal", "k", 7, 5, "active", 0)
DELETED = Mapping("deal", "k", 7, 5, "deleted", 0)
C, U, P, D = OpKind.CREATE, OpKind.UPDATE, OpKind.UPSERT, OpKind.DELETE


@pytest.mark.parametrize(
    ("kind", "mapping", "call", "skip"),
    [
        (C, None, Call.CREATE, None),
        (C, ACTIVE, Call.UPDATE, None),  # a create of a mapped key never makes a second entity
        (C, DELETED, Call.CREATE, None),
        (U, None, None, Reason.NO_BITRIX_ID),
        (U, ACTIVE, Call.UPDATE, None),
        (U, DELETED, None, Reason.DELETED_IN_BITRIX24),
        (P, None, Call.CREATE, None),
        (P, ACTIVE, Call.UPDATE, None),
        (P, DELETED, Call.CREATE, None),
        (D, ACTIVE, Call.DELETE, None),
        (D, None, None, None),
        (D, DELETED, None, None),
    ],
)
def test_plan_table(kind: OpKind, mapping: Mapping | None, call: Call | None, skip: Reason | None) -> None:
    plan = plan_unit(unit((kind, {"T": 1}, None)), mapping, originator_id="shop", recreate_deleted=False)
    assert plan.call == call
    assert plan.skip == skip
    if call is Call.UPDATE or call is Call.DELETE:
        assert plan.bitrix_id == 7
    if call is Call.CREATE:
        assert plan.fields == {"T": 1, "ORIGINATOR_ID": "shop", "ORIGIN_ID": "k"}
    if kind is D and call is None:
        assert plan.done in (Reason.ALREADY_DELETED, Reason.NOTHING_TO_DELETE)


def test_recreate_deleted() -> None:
    plan = plan_unit(unit((U, {"T": 1}, None)), DELETED, originator_id="o", recreate_deleted=True)
    assert plan.call is Call.CREATE


def test_stale_members_are_dropped_and_all_stale_is_skipped() -> None:
    plan = plan_unit(
        unit((U, {"A": 1}, 4), (U, {"B": 2}, 6)), ACTIVE, originator_id="o", recreate_deleted=False
    )
    assert plan.stale == (0,)
    assert plan.fields == {"B": 2}
    plan = plan_unit(unit((U, {"A": 1}, 3)), ACTIVE, originator_id="o", recreate_deleted=False)
    assert plan.call is None
    assert plan.skip is Reason.STALE
    same = plan_unit(unit((U, {"A": 1}, 5)), ACTIVE, originator_id="o", recreate_deleted=False)
    assert same.call is Call.UPDATE  # equal version: a redelivery, applied again harmlessly


def test_merged_fields_later_wins() -> None:
    plan = plan_unit(
        unit((C, {"A": 1, "B": 1}, 1), (U, {"B": 2}, 2), (U, {"C": 3}, 3)),
        None,
        originator_id="o",
        recreate_deleted=False,
    )
    assert plan.call is Call.CREATE
    assert plan.fields == {"A": 1, "B": 2, "C": 3, "ORIGINATOR_ID": "o", "ORIGIN_ID": "k"}


def test_reconcile_after_redelivery_or_ambiguous_failure() -> None:
    assert not plan_unit(unit((C, {}, None)), None, originator_id="o", recreate_deleted=False).reconcile
    redelivered = unit((C, {}, None), deliveries=2)
    assert plan_unit(redelivered, None, originator_id="o", recreate_deleted=False).reconcile
    ambiguous = unit((C, {}, None))
    ambiguous.history.append({"kind": "attempt", "execution": "ambiguous"})
    assert plan_unit(ambiguous, None, originator_id="o", recreate_deleted=False).reconcile


def test_member_older_than_an_earlier_member_is_stale() -> None:
    plan = plan_unit(
        unit((U, {"A": "v7"}, 7), (U, {"A": "v5"}, 5), (U, {"B": "v8"}, 8)),
        ACTIVE,
        originator_id="o",
        recreate_deleted=False,
    )
    assert plan.stale == (1,)
    assert plan.fields == {"A": "v7", "B": "v8"}


def test_create_after_an_ambiguous_create_was_given_up_looks_itself_up() -> None:
    unknown = Mapping("deal", "k", None, None, "unknown", 3)
    plan = plan_unit(unit((C, {"T": 1}, None)), unknown, originator_id="o", recreate_deleted=False)
    assert plan.call is Call.CREATE
    assert plan.reconcile
    later = plan_unit(unit((U, {}, None)), unknown, originator_id="o", recreate_deleted=False)
    assert (later.call, later.dead) == (None, Reason.CREATE_FAILED)  # it waits with its create


def test_dead_lettered_ambiguous_create_leaves_an_unknown_mapping() -> None:
    from bitrix_worker.outcomes import Outcome, Result, mapping_row

    u = unit((C, {"T": 1}, None))
    failed = mapping_row(Result(u, Outcome.DEAD, Reason.BUDGET_SPENT, call=Call.CREATE), 5)
    assert failed is not None
    assert (failed.state, failed.bitrix_id) == ("failed", None)  # certainly nothing was made
    u.history.append({"kind": "attempt", "execution": "ambiguous"})
    row = mapping_row(Result(u, Outcome.DEAD, Reason.BUDGET_SPENT, call=Call.CREATE), 5)
    assert row is not None
    assert (row.state, row.bitrix_id, row.fence) == ("unknown", None, 5)


@pytest.mark.parametrize("state", ["failed", "unknown"])
@pytest.mark.parametrize("kind", [U, D])
def test_an_update_or_delete_of_a_key_whose_create_failed_waits_with_it(state: str, kind: OpKind) -> None:
    failed = Mapping("deal", "k", None, None, state, 3)  # type: ignore[arg-type]
    plan = plan_unit(unit((kind, {"T": 1}, None)), failed, originator_id="o", recreate_deleted=False)
    assert (plan.call, plan.dead, plan.skip) == (None, Reason.CREATE_FAILED, None)


@pytest.mark.parametrize("kind", [C, P])
def test_a_new_create_of_a_key_whose_create_failed_tries_again(kind: OpKind) -> None:
    failed = Mapping("deal", "k", None, None, "failed", 3)
    plan = plan_unit(unit((kind, {"T": 1}, None)), failed, originator_id="o", recreate_deleted=False)
    assert (plan.call, plan.reconcile) == (Call.CREATE, False)
