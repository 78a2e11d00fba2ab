"""Table tests for the pure steps between a stream entry and what is written: intake, judging, settling."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker.config import load_settings
from bitrix_worker.gate import own_failure, whole_request_failure
from bitrix_worker.intake import build_units, poison_settlement
from bitrix_worker.judge import Circumstances, judge_failure
from bitrix_worker.operations import Entity, Operation, OpKind, encode_operation
from bitrix_worker.outcomes import Outcome, Result, settlement
from bitrix_worker.plan import Call, Plan
from bitrix_worker.policy import RetryPolicy
from bitrix_worker.reasons import Reason
from bitrix_worker.records import HistoryEntry, history_from_json
from bitrix_worker.sending import Answered, Failed
from bitrix_worker.stall import Progress, stuck_reason
from bitrix_worker.taxonomy import Classification, ErrorClass, Execution
from bitrix_worker.units import Member, WorkUnit, unit_from_json
from bitrix_worker.values import Entry

AT = 1_700_000_000_000
POLICY = RetryPolicy.from_settings(load_settings())


def op(kind: str, key: str = "k", version: int | None = None, **fields: object) -> Operation:
    return Operation(op=OpKind(kind), entity=Entity.DEAL, key=key, fields=fields, version=version)


def entry(
    i: int, o: Operation | None = None, *, raw: bytes | None = None, deliveries: int = 1, **extra: bytes
) -> Entry:
    fields = dict(extra)
    o = o or op("update")
    payload = raw if raw is not None else encode_operation(o).encode()
    fields["payload"] = payload
    ident = "" if raw is not None else o.ident  # as redis/lua/turns.lua derives it
    whose = "replay" if "history" in extra else ""
    return Entry(f"{AT}-{i}", ident, fields, deliveries, whose, sent=deliveries - 1)


def unit(*ops: Operation) -> WorkUnit:
    members = [Member(f"{AT}-{i}", encode_operation(o), o) for i, o in enumerate(ops)]
    return WorkUnit(ops[0].ident, members, [m.origin for m in members])


def c(cls: ErrorClass, execution: Execution = Execution.EXECUTED, **kw: object) -> Classification:
    return Classification(cls, execution, **kw)  # type: ignore[arg-type]


# ---- intake -------------------------------------------------------------------------------------------


def test_build_units_groups_by_key_in_stream_order() -> None:
    entries = [entry(0, op("create", "a")), entry(1, op("update", "b")), entry(2, op("update", "a", X=1))]
    units, poison = build_units(entries, max_deliveries=5, at_ms=AT)
    assert poison == []
    assert [(u.ident, [m.operation.op.value for m in u.members]) for u in units] == [
        ("deal:a", ["create", "update"]),
        ("deal:b", ["update"]),
    ]
    assert units[0].stream_ids == [f"{AT}-0", f"{AT}-2"]


@pytest.mark.parametrize(
    ("raw", "deliveries", "reason"),
    [
        (b"{not json", 1, "payload is not JSON"),
        (b"[1]", 1, "payload must be a JSON object"),
        (b'{"op":"update","entity":"invoice","key":"k"}', 1, "entity:"),
        (b"\xff\xfe", 1, "payload is not UTF-8"),
        (encode_operation(op("update")).encode(), 6, "sent 5 times without finishing: it keeps failing"),
    ],
)
def test_build_units_turns_the_unreadable_and_the_crash_looping_into_poison(
    raw: bytes, deliveries: int, reason: str
) -> None:
    units, poison = build_units([entry(0, raw=raw, deliveries=deliveries)], max_deliveries=5, at_ms=AT)
    assert units == []
    assert len(poison) == 1
    assert reason in poison[0].reason


def test_a_redelivered_entry_remembers_that_it_may_have_been_sent() -> None:
    (u,), _ = build_units([entry(0, op("create"), deliveries=2)], max_deliveries=5, at_ms=AT)
    assert u.history == [{"kind": "redelivery", "execution": "ambiguous", "deliveries": 2, "at_ms": AT}]
    assert u.ambiguous_before
    assert u.attempts == 0  # a redelivery is not an attempt


def test_a_replayed_entry_carries_its_history_as_prior_attempts() -> None:
    history = [{"kind": "attempt", "attempt": 1, "class": "server_error"}]
    (u,), _ = build_units(
        [entry(0, op("update"), history=json.dumps(history).encode())], max_deliveries=5, at_ms=AT
    )
    assert u.history == [*history, {"kind": "replay", "execution": "ambiguous", "at_ms": AT}]
    assert u.members[0].prior_history == history


def test_a_producers_history_field_is_not_read() -> None:
    history = [{"kind": "attempt", "attempt": 1, "class": "server_error"}]
    e = entry(0, op("update"), history=json.dumps(history).encode())
    (u,), _ = build_units([Entry(e.id, e.ident, e.fields, whose="")], max_deliveries=5, at_ms=AT)
    assert u.history == []
    assert u.members[0].prior_history == []


def test_poison_settlement_dead_letters_each_operation_of_a_unit_under_its_own_id() -> None:
    u = unit(op("update", X=1), op("update", X=2))
    e = Entry(f"{AT}-9", "deal:k", {"unit": u.to_json().encode(), "held": b"1"}, 7, "unit", sent=6)
    _, (p,) = build_units([e], max_deliveries=5, at_ms=AT)
    s = poison_settlement(p, AT)
    assert (s.action, s.ident, s.ids) == ("dead", "deal:k", [f"{AT}-9"])
    assert [json.loads(d[3])["stream_id"] for d in s.dead] == [f"{AT}-0", f"{AT}-1"]
    assert {json.loads(d[3])["class"] for d in s.dead} == {"poison"}
    assert s.counters == {"outcome:dead_lettered": 2, "dead_lettered:poison": 2}


# ---- the unit's JSON round trip ---------------------------------------------------------------------

field_values = st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=20), st.booleans(), st.none())


@given(
    st.lists(
        st.dictionaries(st.from_regex(r"[A-Z_]{1,12}", fullmatch=True), field_values, max_size=4),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 30),
    st.integers(0, 30),
)
def test_a_unit_survives_its_json_round_trip(
    fields: list[dict[str, object]], failures: int, bounces: int
) -> None:
    u = unit(*(op("update", **{**f, "SEQ": i}) for i, f in enumerate(fields)))
    u.failures, u.bounces = failures, bounces
    u.record(c(ErrorClass.SERVER_ERROR, Execution.AMBIGUOUS, http_status=500), method="batch", at_ms=AT)
    back = unit_from_json(u.to_json(), "2-0", deliveries=3)
    assert [m.operation for m in back.members] == [m.operation for m in u.members]
    assert [m.origin for m in back.members] == [m.origin for m in u.members]
    assert (back.failures, back.bounces, back.history) == (failures, bounces, u.history)
    assert (back.stream_ids, back.deliveries) == (["2-0"], 3)


def test_history_from_json_never_raises() -> None:
    assert history_from_json("not json") == []
    assert history_from_json('{"a": 1}') == []
    assert history_from_json('[1, {"kind": "attempt"}]') == [{"kind": "attempt"}]


# ---- judging a failure ------------------------------------------------------------------------------

CREATE = Plan(Call.CREATE, fields={"TITLE": "x"})
UPDATE = Plan(Call.UPDATE, bitrix_id=5)
DELETE = Plan(Call.DELETE, bitrix_id=5)


@pytest.mark.parametrize(
    ("plan", "first_op", "cls", "failures_before", "outcome", "reason", "state"),
    [
        (UPDATE, "update", ErrorClass.SERVER_ERROR, 0, Outcome.RETRY, Reason.RETRYING, None),
        (UPDATE, "update", ErrorClass.SERVER_ERROR, 5, Outcome.DEAD, Reason.BUDGET_SPENT, None),
        (UPDATE, "update", ErrorClass.NOT_FOUND, 0, Outcome.SKIPPED, Reason.DELETED_IN_BITRIX24, "deleted"),
        (UPDATE, "upsert", ErrorClass.NOT_FOUND, 0, Outcome.RETRY, Reason.RECREATING, "deleted"),
        (DELETE, "delete", ErrorClass.NOT_FOUND, 0, Outcome.APPLIED, Reason.ALREADY_DELETED, "deleted"),
        (CREATE, "create", ErrorClass.NOT_FOUND, 1, Outcome.DEAD, Reason.BUDGET_SPENT, None),
        (UPDATE, "update", ErrorClass.INVALID_DATA, 1, Outcome.DEAD, Reason.BUDGET_SPENT, None),
        (UPDATE, "update", ErrorClass.RATE_LIMITED, 0, Outcome.RETRY, Reason.RATE_LIMITED, None),
        (UPDATE, "update", ErrorClass.BLOCKED, 0, Outcome.RETRY, Reason.BLOCKED, None),
    ],
)  # fmt: skip
def test_judge_failure_table(  # noqa: PLR0917 - one parameter per column
    plan: Plan,
    first_op: str,
    cls: ErrorClass,
    failures_before: int,
    outcome: Outcome,
    reason: Reason,
    state: str | None,
) -> None:
    u = unit(op(first_op))
    u.failures = failures_before
    r = judge_failure(
        u, plan, c(cls), "crm.deal.x", policy=POLICY, rng=random.Random(1), how=Circumstances(AT)
    )
    assert (r.outcome, r.reason, r.mapping_state) == (outcome, reason, state)
    assert u.history[-1]["kind"] == "attempt"
    assert u.history[-1]["at_ms"] == AT
    spent = cls not in (ErrorClass.RATE_LIMITED, ErrorClass.BLOCKED)
    assert (u.failures, u.bounces) == ((failures_before + 1, 0) if spent else (failures_before, 1))


def test_an_ambiguous_create_waits_for_the_portals_cut_off_before_its_lookup() -> None:
    how = Circumstances(AT, sent_s=5.0, portal_request_timeout_s=60.0)
    r = judge_failure(
        unit(op("create")), CREATE, c(ErrorClass.NETWORK, Execution.AMBIGUOUS), "batch",
        policy=POLICY, rng=random.Random(1), how=how,
    )  # fmt: skip
    assert r.outcome is Outcome.RETRY
    assert r.delay_s >= 55.0


def test_the_history_never_holds_the_secret() -> None:
    u = unit(op("update"))
    judge_failure(
        u, UPDATE, c(ErrorClass.AUTH, description="bad hook s3cr3t-token"), "crm.deal.update",
        policy=POLICY, rng=random.Random(1), how=Circumstances(AT, secrets=("s3cr3t-token",)),
    )  # fmt: skip
    assert "s3cr3t-token" not in json.dumps(u.history)


# ---- settling ---------------------------------------------------------------------------------------


def test_settlement_of_a_retry_carries_the_unit() -> None:
    u = unit(op("update", X=1))
    s = settlement(Result(u, Outcome.RETRY, Reason.RETRYING, delay_s=1.5), AT)
    assert (s.action, s.delay_ms, s.origin, s.counters) == ("retry", 1500, u.origin, {"retries": 1})
    assert unit_from_json(s.unit, "x").members[0].operation == u.head
    assert s.dead == s.outcomes == []


def test_settlement_of_a_final_result_records_every_member_and_counts_stale_ones_apart() -> None:
    u = unit(op("update", version=3), op("update", version=5))
    r = Result(u, Outcome.APPLIED, Reason.UPDATED, bitrix_id=7, stale=(0,))
    s = settlement(r, AT)
    assert s.action == "done"
    records = [dict(zip(rec[::2], rec[1::2], strict=True)) for rec in s.outcomes]
    assert [(x["outcome"], x["reason"]) for x in records] == [("skipped", "stale"), ("applied", "updated")]
    assert {x["bitrix_id"] for x in records} == {"7"}
    assert s.counters == {"outcome:skipped": 1, "skipped:stale": 1, "outcome:applied": 1}


def test_settlement_of_a_dead_letter_keeps_payload_error_and_history() -> None:
    u = unit(op("update", X=1))
    cls = c(ErrorClass.SERVER_ERROR, http_status=500, bitrix_code="INTERNAL_SERVER_ERROR", description="boom")
    u.record(cls, method="crm.deal.update", at_ms=AT)
    r = Result(
        u, Outcome.DEAD, Reason.BUDGET_SPENT, "server_error: retry budget of 5 spent", classification=cls
    )
    s = settlement(r, AT)
    ((_, payload, _, raw),) = s.dead
    assert payload == u.members[0].payload
    error = json.loads(raw)
    assert (error["class"], error["http_status"], error["bitrix_code"]) == (
        "server_error",
        500,
        "INTERNAL_SERVER_ERROR",
    )
    assert (error["reason"], error["attempts"], error["stream_id"]) == (
        "server_error: retry budget of 5 spent",
        1,
        u.origin,
    )
    assert s.counters["dead_lettered:server_error: retry budget of 5 spent"] == 1


# ---- the portal gate's rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "portal"),
    [
        (Failed(c(ErrorClass.AUTH), "batch", 0.1), ErrorClass.AUTH),
        (Failed(c(ErrorClass.SERVER_ERROR, http_status=503), "batch", 0.1), ErrorClass.SERVER_ERROR),
        (Failed(c(ErrorClass.NETWORK, Execution.NOT_EXECUTED), "batch", 0.0), ErrorClass.NETWORK),
        (Failed(c(ErrorClass.BLOCKED), "batch", 0.1), ErrorClass.BLOCKED),
        (Failed(c(ErrorClass.INVALID_DATA), "crm.deal.add", 0.1), None),  # the operation's own data
        (Failed(c(ErrorClass.RATE_LIMITED), "batch", 0.1), None),  # the limiter's business
        (
            Answered({}, {"c0": c(ErrorClass.AUTH), "c1": c(ErrorClass.AUTH)}),
            ErrorClass.AUTH,
        ),  # every command
        (Answered({"c0": 1}, {"c1": c(ErrorClass.AUTH)}), None),  # the portal answered the others
        (Answered({}, {"c0": c(ErrorClass.AUTH), "c1": c(ErrorClass.INVALID_DATA)}), None),
        (Answered({"c0": 1}, {}), None),
    ],
)
def test_which_answers_may_be_the_portals_fault(answer: Answered | Failed, portal: ErrorClass | None) -> None:
    found = whole_request_failure(answer)
    assert (found.error_class if found else None) is portal


@pytest.mark.parametrize(
    ("history", "ok_at", "own"),
    [
        ([], 10**15, False),  # its first failure: the portal's until proven otherwise
        ([{"kind": "attempt", "class": "server_error", "portal": True, "at_ms": AT}], AT - 1, False),
        ([{"kind": "attempt", "class": "server_error", "portal": True, "at_ms": AT}], AT + 1, True),
        ([{"kind": "attempt", "class": "server_error", "at_ms": AT}], 0, True),  # failed alone in a batch
        ([{"kind": "attempt", "class": "invalid_data", "at_ms": AT}], AT + 1, False),  # another kind
        ([{"kind": "redelivery", "portal": True, "at_ms": AT}], AT + 1, False),
    ],
)
def test_when_a_whole_request_failure_is_the_operations_own(
    history: list[HistoryEntry], ok_at: int, own: bool
) -> None:
    assert own_failure(history, ok_at) is own


def test_a_portal_fault_spends_nothing_and_holds_the_operation() -> None:
    u = unit(op("update"))
    how = Circumstances(AT, whole_request=True, portal_fault=True)
    for _ in range(20):
        r = judge_failure(
            u, UPDATE, c(ErrorClass.SERVER_ERROR), "batch", policy=POLICY, rng=random.Random(1), how=how
        )
        assert (r.outcome, r.reason) == (Outcome.RETRY, Reason.PORTAL_DOWN)
    assert (u.failures, u.bounces, u.attempts) == (0, 0, 20)
    assert all(h.get("portal") for h in u.history)
    own = Circumstances(AT, whole_request=True, portal_fault=False)
    r = judge_failure(
        u, UPDATE, c(ErrorClass.SERVER_ERROR), "batch", policy=POLICY, rng=random.Random(1), how=own
    )
    assert (r.reason, u.failures) == (Reason.RETRYING, 1)


# ---- stuck worker -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("holding", "idle_s", "stuck"),
    [(0, 10_000.0, False), (3, 599.0, False), (3, 600.0, False), (3, 601.0, True)],
)
def test_a_worker_is_stuck_only_when_it_holds_entries_past_the_bound(
    holding: int, idle_s: float, stuck: bool
) -> None:
    reason = stuck_reason(holding, idle_s, 600.0)
    assert (reason is not None) == stuck
    if reason:
        assert reason == (
            "stuck: holds 3 entries and made no progress for 601 s "
            "(more than BITRIX_WORKER_STALL_AFTER_S=600)"
        )


def test_progress_is_any_finished_request_outcome_or_retry() -> None:
    now = [0.0]
    p = Progress(clock=lambda: now[0])
    now[0] = 50.0
    assert p.since_s() == 50.0
    p.call("batch", "server_error", 1.0)
    assert p.since_s() == 0.0
    now[0] = 60.0
    p.retry(ErrorClass.NETWORK, 1.0)
    assert p.since_s() == 0.0
