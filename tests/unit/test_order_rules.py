"""Orders, pure parts: references by key, product rows and pipeline moves in the plan, the commands per
entity, the lone chain's safety and bad input refused when the entry is read (0 calls)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker import calls, refs
from bitrix_worker.bitrix.items import references
from bitrix_worker.errors import PoisonMessage
from bitrix_worker.followups import MAIN, lone_chain, steps_for
from bitrix_worker.mapping import Mapping
from bitrix_worker.operations import EntityName, Operation, OpKind, decode_payload, encode_operation
from bitrix_worker.plan import Call, command_for, plan_unit
from bitrix_worker.reasons import Reason
from bitrix_worker.units import Member, WorkUnit, unit_from_json

C, U, P, D = OpKind.CREATE, OpKind.UPDATE, OpKind.UPSERT, OpKind.DELETE
MUG = {"PRODUCT_NAME": "Mug", "PRICE": 9.5, "QUANTITY": 2}


def op(kind: OpKind, entity: str = "deal", key: str = "k", **extra: Any) -> Operation:
    return Operation.model_validate({"op": kind, "entity": entity, "key": key, **extra})


def unit(*ops: Operation, followups_only: bool = False) -> WorkUnit:
    members = [Member(f"1-{i}", encode_operation(o), o) for i, o in enumerate(ops)]
    return WorkUnit(ops[0].ident, members, [m.origin for m in members], followups_only=followups_only)


def active(entity: str = "deal", key: str = "k", bitrix_id: int = 7) -> Mapping:
    return Mapping(entity, key, bitrix_id, None, "active", 0)


def plan(u: WorkUnit, mapping: Mapping | None = None, known: dict[Any, Mapping] | None = None) -> Any:
    return plan_unit(u, mapping, originator_id="shop", recreate_deleted=False, known=known)


# -- references -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("contact:customer-7", ("contact", "customer-7")),
        ("deal:a:b", ("deal", "a:b")),  # the key may hold colons
        ("item:128:parcel-9", ("item:128", "parcel-9")),
        ("smart_invoice:inv 1", ("smart_invoice", "inv 1")),
    ],
)
def test_parse_ref(text: str, pair: tuple[str, str]) -> None:
    assert refs.parse_ref({"$ref": text}).pair == pair


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({"$ref": "contact"}, "malformed"),
        ({"$ref": "contact:"}, "malformed"),
        ({"$ref": 7}, "malformed"),
        ({"$ref": "contact:k", "x": 1}, "malformed"),
        ({"$ref": "contact: k"}, "malformed"),
        ({"$ref": "invoice:k"}, "unknown entity type"),
        ({"$ref": "item:7:k"}, "unknown entity type"),
        ({"$ref": "item:12:k"}, "unknown entity type"),
    ],
)
def test_bad_refs(value: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        refs.parse_ref(value)


@pytest.mark.parametrize(
    ("ident", "parts"),
    [("deal:a:b", ("deal", "a:b")), ("item:128:k:1", ("item:128", "k:1")), ("deal:", None), ("x", None)],
)
def test_split_ident(ident: str, parts: tuple[str, str] | None) -> None:
    assert refs.split_ident(ident) == parts


def test_collect_finds_refs_at_any_depth_once() -> None:
    fields = {
        "CONTACT_IDS": [{"$ref": "contact:a"}, {"$ref": "contact:b"}],
        "COMPANY_ID": {"$ref": "company:c"},
        "X": {"nested": [{"$ref": "contact:a"}]},
    }
    assert [r.ident for r in refs.collect(fields)] == ["contact:a", "contact:b", "company:c"]


def test_substitute_uses_only_live_ids() -> None:
    known = {
        ("contact", "a"): active("contact", "a", 11),
        ("contact", "gone"): Mapping("contact", "gone", 12, None, "deleted", 0),
        ("contact", "failed"): Mapping("contact", "failed", None, None, "failed", 0),
    }
    value = {"CONTACT_IDS": [{"$ref": "contact:a"}], "N": 1}
    assert refs.substitute(value, known) == {"CONTACT_IDS": [11], "N": 1}
    for key, why in (("gone", "deleted"), ("failed", "dead-lettered"), ("never", "never created")):
        with pytest.raises(refs.Unresolved, match=why):
            refs.substitute({"C": {"$ref": f"contact:{key}"}}, known)


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5) | st.just({"$ref": "contact:a"}),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(st.text(max_size=4).filter(lambda k: k != refs.REF), c, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_substitution_leaves_no_ref_and_never_another_id(value: Any) -> None:
    """Whatever the shape, every reference becomes exactly its target's id, and nothing else changes.

    Keys other than ``$ref`` only: an object that carries ``$ref`` beside other things (or not a string) is a
    malformed reference, refused when the entry is read (the table below), never substituted. Hypothesis
    draws string literals from the code under test, so without the filter it finds ``{"$ref": None}``."""
    known = {("contact", "a"): active("contact", "a", 42)}
    out = refs.substitute(value, known)
    assert refs.collect(out) == []
    assert _replace(value) == out


def _replace(value: Any) -> Any:
    if value == {"$ref": "contact:a"}:
        return 42
    if isinstance(value, dict):
        return {k: _replace(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v) for v in value]
    return value


# -- bad input: refused when the entry is read --------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (
            {"op": "create", "entity": "contact", "key": "k", "products": [MUG]},
            "a contact has no product rows",
        ),
        ({"op": "create", "entity": "company", "key": "k", "products": []}, "a company has no product rows"),
        ({"op": "create", "entity": "deal", "key": "k", "products": [MUG, 3]}, "products[1]: a product row"),
        ({"op": "create", "entity": "deal", "key": "k", "products": "x"}, "products"),
        ({"op": "delete", "entity": "deal", "key": "k", "products": []}, "a delete carries no product rows"),
        ({"op": "create", "entity": "deal", "key": "k", "fields": {"A": {"$ref": "deal:k"}}}, "own key"),
        ({"op": "create", "entity": "deal", "key": "k", "fields": {"A": {"$ref": "x:k"}}}, "unknown entity"),
        ({"op": "create", "entity": "deal", "key": "k", "fields": {"A": [{"$ref": 1}]}}, "malformed"),
        ({"op": "create", "entity": "deal", "key": "k", "products": [{"P": {"$ref": "lead"}}]}, "malformed"),
        ({"op": "create", "entity": "item:7", "key": "k"}, "is 'quote'"),
        ({"op": "create", "entity": "item:99", "key": "k"}, "smart-process type id"),
        (
            {"op": "create", "entity": "quote", "key": "k", "fields": {"TITLE": 1, "title": 2}},
            "same crm.item",
        ),
    ],
)
def test_bad_orders_are_poison_with_a_reason(payload: dict[str, Any], why: str) -> None:
    with pytest.raises(PoisonMessage) as info:
        decode_payload(json.dumps(payload))
    assert why in info.value.reason


def test_entity_name_is_value_compatible_and_labels_are_bounded() -> None:
    deal, item = EntityName.parse("deal"), EntityName.parse("item:1030")
    assert (deal.value, deal == "deal", deal.label) == ("deal", True, "deal")
    assert (item.value, item.label, item.spec.entity_type_id) == ("item:1030", "item", 1030)
    o = op(C, "item:128", products=[MUG])
    assert decode_payload(encode_operation(o)) == o


# -- plans -----------------------------------------------------------------------------------------


def test_products_absent_empty_and_set() -> None:
    assert plan(unit(op(U, fields={"T": 1})), active()).products is None
    cleared = plan(unit(op(U, fields={"T": 1}, products=[])), active())
    assert (cleared.call, cleared.products) == (Call.UPDATE, [])
    created = plan(unit(op(C, fields={"T": 1}, products=[MUG])))
    assert (created.call, created.products) == (Call.CREATE, [MUG])


def test_coalesced_updates_keep_the_last_products() -> None:
    u = unit(
        op(U, fields={"A": 1}, products=[MUG]), op(U, fields={"B": 2}, products=[]), op(U, fields={"C": 3})
    )
    p = plan(u, active())
    assert (p.fields, p.products) == ({"A": 1, "B": 2, "C": 3}, [])


def test_an_update_with_only_rows_sends_only_the_rows() -> None:
    p = plan(unit(op(U, products=[MUG])), active())
    assert (p.call, p.followups_only, p.bitrix_id) == (None, True, 7)


def test_a_rows_retry_sends_the_rows_alone_never_a_create() -> None:
    u = unit(op(C, fields={"T": 1}, products=[MUG]), followups_only=True)
    p = plan(u, active())
    assert (p.call, p.followups_only, p.products) == (None, True, [MUG])
    back = unit_from_json(u.to_json(), "2-0")
    assert back.followups_only
    old = unit_from_json(unit(op(C)).to_json(), "2-0")  # written before the marker existed
    assert not old.followups_only
    data = json.loads(u.to_json())
    data["members"].append(data["members"][0])  # it gained a member: that one's fields are not written
    grown = unit_from_json(json.dumps(data), "2-0")
    assert not grown.followups_only
    assert plan(grown, active()).call is Call.UPDATE


def test_a_deals_pipeline_change_is_a_separate_move() -> None:
    p = plan(unit(op(U, fields={"TITLE": "x", "CATEGORY_ID": 3, "STAGE_ID": "C3:WON"})), active())
    assert p.fields == {"TITLE": "x"}
    assert p.move is not None
    assert p.move.fields == {"categoryId": 3, "stageId": "C3:WON"}
    assert p.category == 3
    [move] = steps_for(p, EntityName.parse("deal").spec, 7).values()
    assert (move.method, move.params["id"], move.params["entityTypeId"]) == ("crm.item.update", 7, 2)
    created = plan(unit(op(C, fields={"CATEGORY_ID": 3})))  # crm.deal.add takes it
    assert created.move is None
    assert created.fields["CATEGORY_ID"] == 3


def test_a_smart_process_moves_in_its_own_update() -> None:
    p = plan(unit(op(U, "item:128", fields={"TITLE": "x", "CATEGORY_ID": 9})), active("item:128"))
    assert (p.fields, p.move, p.category) == ({"title": "x", "categoryId": 9}, None, 9)


def test_references_are_resolved_or_dead_letter_the_unit() -> None:
    fields = {"CONTACT_ID": {"$ref": "contact:c"}}
    rows = [{**MUG, "PRODUCT_ID": {"$ref": "deal:other"}}]
    u = unit(op(C, fields=fields, products=rows))
    known = {("contact", "c"): active("contact", "c", 5), ("deal", "other"): active("deal", "other", 6)}
    p = plan(u, None, known)
    assert p.fields["CONTACT_ID"] == 5
    assert p.products == [{**MUG, "PRODUCT_ID": 6}]
    missing = plan(u, None, {("contact", "c"): active("contact", "c", 5)})
    assert (missing.call, missing.dead) == (None, Reason.REF_UNRESOLVED)
    assert missing.unresolved is not None
    assert missing.unresolved.ident == "deal:other"
    assert '{"$ref": "deal:other"}' in missing.detail


def test_a_stale_members_refs_do_not_matter() -> None:
    u = unit(op(U, fields={"C": {"$ref": "contact:gone"}}, version=1), op(U, fields={"T": 1}, version=5))
    p = plan(u, Mapping("deal", "k", 7, 3, "active", 0), {})
    assert (p.call, p.fields, p.stale) == (Call.UPDATE, {"T": 1}, (0,))


@pytest.mark.parametrize(
    ("entity", "method", "origin"),
    [
        ("deal", "crm.deal.add", {"ORIGINATOR_ID": "shop", "ORIGIN_ID": "k"}),
        ("quote", "crm.item.add", {"xmlId": "shop:k"}),
        ("smart_invoice", "crm.item.add", {"xmlId": "shop:k"}),
        ("item:1030", "crm.item.add", {"xmlId": "shop:k"}),
    ],
)
def test_commands_per_entity(entity: str, method: str, origin: dict[str, str]) -> None:
    spec = EntityName.parse(entity).spec
    p = plan(unit(op(C, entity, fields={"TITLE": "t", "OPPORTUNITY": 5})))
    command = command_for(p, spec)
    assert command.method == method
    fields = command.params["fields"]
    assert {k: fields[k] for k in origin} == origin
    assert ("TITLE" in fields) == (spec.api.value == "old")
    lookup = calls.lookup(spec, originator="shop", key="k")
    answer: Any = [{"ID": "3", **origin}] if spec.api.value == "old" else {"items": [{"id": 3, **origin}]}
    assert calls.found_ids(spec, answer, originator="shop", key="k") == [3]
    other: Any = [{"ID": "4"}] if spec.api.value == "old" else {"items": [{"id": 4, "xmlId": None}]}
    assert calls.found_ids(spec, other, originator="shop", key="k") == []  # a filter ignored: not adopted
    assert lookup.params["filter"] == {f"={k}": v for k, v in origin.items()}


def test_created_ids_of_both_apis() -> None:
    assert calls.created_id(EntityName.parse("deal").spec, 5) == 5
    assert calls.created_id(EntityName.parse("quote").spec, {"item": {"id": 6}}) == 6
    with pytest.raises(ValueError, match="item"):
        calls.created_id(EntityName.parse("quote").spec, 6)


# -- the lone chain ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ["deal", "lead", "quote", "smart_invoice", "item:128"])
def test_a_lone_create_chains_its_rows_to_its_own_result_only(entity: str) -> None:
    u = unit(op(C, entity, fields={"TITLE": "t"}, products=[MUG]))
    p = plan(u)
    chain = lone_chain(u, p, {MAIN: command_for(p, u.head.entity.spec)})
    assert chain is not None
    assert list(chain) == [MAIN, "rows0"]
    assert references(dict(chain["rows0"].params)) == {MAIN}  # only the unit's own create
    owner = chain["rows0"].params["ownerId"]
    assert owner == ("$result[c0]" if entity in ("deal", "lead") else "$result[c0][item][id]")


def test_chains_only_when_safe() -> None:
    u = unit(op(C, fields={"TITLE": "t"}, products=[]))
    p = plan(u)
    assert lone_chain(u, p, {MAIN: command_for(p, u.head.entity.spec)}) is None  # [] cannot be batched
    plain = unit(op(C, fields={"TITLE": "t"}))
    pp = plan(plain)
    assert lone_chain(plain, pp, {MAIN: command_for(pp, plain.head.entity.spec)}) is None
    upd = unit(op(U, fields={"TITLE": "t", "CATEGORY_ID": 2}, products=[MUG]))
    up = plan(upd, active())
    chain = lone_chain(upd, up, {MAIN: command_for(up, upd.head.entity.spec)})
    assert chain is not None
    assert list(chain) == [MAIN, "move0", "rows0"]
    assert all(not references(dict(c.params)) for c in chain.values())  # literal ids only


def test_smart_processes_share_one_metric_label() -> None:
    from bitrix_worker.metrics import PrometheusEvents

    events = PrometheusEvents()
    for entity in ("item:128", "item:1030", "quote"):
        events.outcome("applied", Reason.CREATED, entity, None)
    text = events.render().decode()
    assert 'entity="item"' in text
    assert 'entity="quote"' in text
    assert "item:128" not in text
