from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
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
