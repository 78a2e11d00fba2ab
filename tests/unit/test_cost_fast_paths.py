"""The fast paths of issue 14's second cost round give exactly what the general code gives."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker import reporting
from bitrix_worker.events import Outcomes
from bitrix_worker.operations import Entity, Operation, OpKind, encode_operation
from bitrix_worker.outcomes import Outcome, Result, _applied_alone, _settled, settlement
from bitrix_worker.plan import Call
from bitrix_worker.reasons import Reason
from bitrix_worker.records import attempt_entry
from bitrix_worker.taxonomy import Classification, ErrorClass, Execution
from bitrix_worker.units import Member, WorkUnit
from bitrix_worker.values import Entry, Mapping

AT = 1_700_000_000_000


def applied(
    *, kind: OpKind, key: str, reason: Reason, detail: str, bitrix_id: int | None, tries: int, cls: bool
) -> Result:
    o = Operation(op=kind, entity=Entity.DEAL, key=key, fields={}, version=None)
    c = Classification(ErrorClass.SERVER_ERROR, Execution.EXECUTED) if cls else None
    failed = Classification(ErrorClass.SERVER_ERROR, Execution.NOT_EXECUTED)
    history = [attempt_entry(failed, attempt=i + 1, method="batch", at_ms=AT) for i in range(tries)]
    u = WorkUnit(o.ident, [Member(f"{AT}-7", encode_operation(o), o)], [f"{AT}-7"], history=history)
    return Result(u, Outcome.APPLIED, reason, detail, c, Call.UPDATE, bitrix_id, mapping_state="active")


CASES = st.fixed_dictionaries(
    {
        "kind": st.sampled_from([OpKind.UPDATE, OpKind.CREATE, OpKind.UPSERT, OpKind.DELETE]),
        "key": st.from_regex(r"[a-z0-9-]{1,8}", fullmatch=True),
        "reason": st.sampled_from(list(Reason)),
        "detail": st.sampled_from(["", "updated 3 rows"]),
        "bitrix_id": st.none() | st.integers(1, 10**9),
        "tries": st.integers(0, 3),
        "cls": st.booleans(),
    }
)


@given(case=CASES)
def test_an_applied_unit_of_one_settles_as_the_general_path_settles_it(case: dict[str, Any]) -> None:
    r = applied(**case)
    assert _applied_alone(r, AT) == _settled(r, AT) == settlement(r, AT)


def test_the_general_path_still_settles_what_the_fast_path_leaves() -> None:
    r = applied(
        kind=OpKind.UPDATE, key="k", reason=Reason.UPDATED, detail="", bitrix_id=5, tries=0, cls=False
    )
    r.stale = (0,)
    got = settlement(r, AT)
    assert got.counters == {"outcome:skipped": 1, f"skipped:{Reason.STALE.sentence}": 1}
    r.stale, r.outcome = (), Outcome.SKIPPED
    assert settlement(r, AT) == _settled(r, AT) != _applied_alone(r, AT)


def test_mapping_rows_hash_and_compare_by_value_as_frozen_ones_did() -> None:
    a, b = Mapping("deal", "k", 1, 2, "active", 3), Mapping("deal", "k", 1, 2, "active", 3)
    assert a == b
    assert hash(a) == hash(b) == hash(("deal", "k", 1, 2, "active", 3))
    assert len({a, b}) == 1
    assert a != dataclasses.replace(a, fence=4)


def test_an_entry_is_still_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Entry("1-0", "deal:k", {"payload": b"{}"}))


def lines(into: list[tuple[str, dict[str, Any]]]) -> Any:
    return lambda event, **kw: into.append((event, kw))


@given(case=CASES)
def test_an_applied_unit_of_one_is_reported_as_the_general_path_reports_it(case: dict[str, Any]) -> None:
    r = applied(**case)
    fast: list[tuple[str, dict[str, Any]]] = []
    general: list[tuple[str, dict[str, Any]]] = []
    fast_batch, general_batch = Outcomes(), Outcomes()
    reporting._applied_alone(r, AT + 1500, lines(fast), fast_batch)
    reporting._members(r, AT + 1500, lines(general), lines(general), general_batch)
    assert fast == general
    assert list(fast[0][1]) == list(general[0][1])  # the line's keys in the same order
    assert fast_batch == general_batch
    assert [type(part) for part in next(iter(fast_batch.counts))] == [
        type(part) for part in next(iter(general_batch.counts))
    ]
