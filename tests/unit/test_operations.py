from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bitrix_worker.errors import PoisonMessage
from bitrix_worker.operations import Entity, Operation, OpKind, decode_payload, encode_operation


def test_round_trip() -> None:
    op = Operation(op=OpKind.UPDATE, entity=Entity.DEAL, key="order-42", fields={"TITLE": "x"}, version=3)
    assert decode_payload(encode_operation(op)) == op
    assert decode_payload(encode_operation(op).encode()) == op


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "no 'payload' field"),
        (b"\xff\xfe", "not UTF-8"),
        ("{not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"op": "merge", "entity": "deal", "key": "k"}', "op:"),
        ('{"op": "create", "entity": "invoice", "key": "k"}', "entity:"),
        ('{"op": "create", "entity": "deal"}', "key: Field required"),
        ('{"op": "create", "entity": "deal", "key": ""}', "key:"),
        ('{"op": "create", "entity": "deal", "key": "k", "fields": [1]}', "fields:"),
        ('{"op": "create", "entity": "deal", "key": "k", "fields": "x"}', "fields:"),
        ('{"op": "create", "entity": "deal", "key": "k", "version": -1}', "version:"),
        ('{"op": "create", "entity": "deal", "key": "k", "extra": 1}', "extra:"),
        ('{"op": "create", "entity": "deal", "key": " k"}', "key:"),
    ],
)
def test_malformed_payloads_are_poison_with_reason(raw: str | bytes | None, reason: str) -> None:
    with pytest.raises(PoisonMessage) as info:
        decode_payload(raw)
    assert reason in info.value.reason


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_decode_never_raises_anything_but_poison(raw: bytes | str) -> None:
    with contextlib.suppress(PoisonMessage):
        decode_payload(raw)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
        max_leaves=10,
    )
)
def test_decode_arbitrary_json(value: object) -> None:
    with contextlib.suppress(PoisonMessage):
        decode_payload(json.dumps(value))


def test_references_are_collected_as_walk_finds_them() -> None:
    """``refs.collect`` gathers what ``walk`` yields (first-seen order, each once) without a generator per
    level; validation and the lookup of a batch's targets both rely on it."""
    from bitrix_worker.refs import Ref, collect, walk

    fields = {
        "A": 1,
        "CONTACT_ID": {"$ref": "contact:c1"},
        "L": [{"$ref": "company:c2"}, {"$ref": "contact:c1"}, ({"$ref": "lead:l1"},)],
        "N": {"deep": [{"x": {"$ref": "company:c2"}}]},
    }
    rows = [{"PRODUCT_ID": 1, "X": {"$ref": "contact:c3"}}]
    expected = [Ref("contact", "c1"), Ref("company", "c2"), Ref("lead", "l1"), Ref("contact", "c3")]
    assert collect(fields, rows) == expected
    assert collect(fields, rows) == list(dict.fromkeys(r for v in (fields, rows) for r in walk(v)))
    assert collect({"A": 1, "B": "x"}, None) == []
    with pytest.raises(ValueError, match="malformed reference"):
        collect({"A": {"$ref": "contact:c1", "extra": 1}})


_ANY = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=4)
_KEYS = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(
    ["order-1", "x" * 200, "y" * 201, " k", "k ", "k\n", "k\x1f", "k\x7f", "é", "\u00a0k", "", "deal:1"]
)
_REFS = st.sampled_from([{"$ref": "contact:c1"}, {"$ref": "deal:order-1"}, {"$ref": "contact"}, {"$ref": 3}])
_REFS |= st.just({"$ref": "x:1", "y": 1})  # malformed: a reference has no other name
_VALUES = st.recursive(
    _ANY | _REFS, lambda c: st.lists(c, max_size=2) | st.dictionaries(st.text(max_size=3), c)
)
_FIELD_NAMES = st.text(max_size=3) | st.sampled_from(
    ["", "TITLE", "title", "ASSIGNED_BY_ID", "assignedById", "$ref"]
)
_ENTITIES = ["deal", "contact", "smart_invoice", "item:1036", "item:128", "item:31", "invoice"]
_ROWS = st.dictionaries(st.text(max_size=3), _ANY, max_size=2) | _ANY
_PARTS = {
    "op": st.sampled_from(["create", "update", "upsert", "delete", "merge", "UPDATE", " update"]) | _ANY,
    "entity": st.sampled_from(_ENTITIES) | _ANY,
    "key": _KEYS | _ANY,
    "fields": st.dictionaries(_FIELD_NAMES, _VALUES, max_size=4) | _ANY | st.lists(_ANY, max_size=1),
    "products": st.none() | st.lists(_ROWS, max_size=2),
    "version": st.integers(-1, 3) | st.sampled_from([2**63 - 1, 2**63, 7.0, "7", True]) | _ANY,
    "portal": st.sampled_from(["main", "p.1:a-b_c", "a b", "x\n", "-x", "a" * 200, "a" * 201, "{p}"]) | _ANY,
    "extra": _ANY,
}

_GOOD = {
    "op": st.sampled_from(["create", "update", "upsert", "delete"]),
    "entity": st.sampled_from(["deal", "contact", "lead", "smart_invoice", "item:1036", "item:128"]),
    "key": st.sampled_from(["order-1", "k", "x" * 200, "x" * 201, "é", "a b", " k", "k\x00"]) | _KEYS,
}
_MOSTLY_GOOD = {
    "fields": st.dictionaries(_FIELD_NAMES, _ANY | _REFS, max_size=3),
    "version": st.none() | st.integers(-1, 3) | st.sampled_from([2**63 - 1, 2**63]),
    "portal": st.none() | st.sampled_from(["main", "p.1:a-b_c", "main\n", "a" * 200, "a" * 201, "-x"]),
    "products": st.none(),
}
_NEAR_GOOD = st.fixed_dictionaries(_GOOD, optional=_MOSTLY_GOOD)


@st.composite
def _payloads(draw: st.DrawFn) -> dict[str, object]:
    data: dict[str, object] = draw(_NEAR_GOOD)
    kind = draw(st.integers(0, 2))
    if kind == 1:  # one part anything at all (or gone)
        name = draw(st.sampled_from(sorted(_PARTS)))
        data[name] = draw(_PARTS[name])
        if draw(st.booleans()):
            data.pop(name)
    elif kind == 2:
        data = draw(st.fixed_dictionaries({}, optional=_PARTS))
    return data


@settings(max_examples=400)
@given(_payloads())
def test_the_common_shape_reads_exactly_as_the_model_reads_it(data: dict[str, object]) -> None:
    """``_common`` (the fast path of ``decode_payload``) gives the very Operation the model gives, and
    nothing where the model refuses: a dead letter's reason is always the model's."""
    from pydantic import ValidationError

    from bitrix_worker.operations import _common

    data = json.loads(json.dumps(data))  # as a payload is read: plain JSON types, str names
    try:
        fast = _common(data)
    except Exception as exc:  # not a ValueError: the model raises it too
        with pytest.raises(type(exc)):
            Operation.model_validate(data)
        return
    try:
        model = Operation.model_validate(data)
    except ValidationError:
        assert fast is None
        return
    if fast is not None:
        assert fast == model
        assert list(fast.__dict__.items()) == list(model.__dict__.items())
        assert [type(v) for v in fast.__dict__.values()] == [type(v) for v in model.__dict__.values()]
        assert fast.model_fields_set == model.model_fields_set
        assert encode_operation(fast) == encode_operation(model)
        assert fast.fields is not data.get("fields")  # a copy, as the model keeps


def test_the_common_shape_takes_the_fast_path() -> None:
    from bitrix_worker.operations import _common

    data = {"op": "update", "entity": "deal", "key": "order-1", "fields": {"STAGE_ID": "WON"}, "version": 3}
    assert _common(data) == Operation.model_validate(data)
    assert _common({**data, "entity": "item:1036", "portal": "main"}) is not None
    assert _common({**data, "products": []}) is None  # rows: the model judges them
