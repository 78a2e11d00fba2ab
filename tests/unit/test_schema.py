"""Parsing the portal's schema answers (old API map, crm.item.fields, lists) and the JSON round trip, plus
the validator's properties: it never raises, and values built from the schema itself pass."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fieldschemas import CONFIG, portal_schema
from hypothesis import given, settings
from hypothesis import strategies as st

from bitrix_worker.emulator.portal import Portal
from bitrix_worker.emulator.store import NOT_RETURNED
from bitrix_worker.schema import (
    EntitySchema,
    FieldSchema,
    parse_categories,
    parse_fields,
    parse_statuses,
    status_lists_needed,
)
from bitrix_worker.validation import FindingKind, validate

DEAL = portal_schema("deal")
CONTACT = portal_schema("contact")

ITEM_FIELDS = {
    "fields": {
        "stageId": {
            "type": "crm_status",
            "isRequired": False,
            "isReadOnly": False,
            "isImmutable": False,
            "isMultiple": False,
            "isDynamic": False,
            "title": "Stage",
            "statusType": "DEAL_STAGE",
            "upperName": "STAGE_ID",
        },
        "ufCrm44_1721812814433": {
            "type": "enumeration",
            "isRequired": False,
            "isReadOnly": False,
            "isImmutable": False,
            "isMultiple": False,
            "isDynamic": True,
            "items": [{"ID": "79", "VALUE": "List item #1"}, {"ID": "80", "VALUE": "List item #2"}],
            "title": "Custom field (list)",
            "listLabel": "…",
            "formLabel": "…",
            "filterLabel": "…",
            "settings": {"DISPLAY": "LIST", "LIST_HEIGHT": 1, "CAPTION_NO_VALUE": "", "SHOW_NO_VALUE": "Y"},
            "upperName": "UF_CRM_44_1721812814433",
        },
        "companyId": {
            "type": "crm_company",
            "isRequired": False,
            "isReadOnly": False,
            "isImmutable": False,
            "isMultiple": False,
            "isDynamic": False,
            "title": "Company",
            "settings": {"parentEntityTypeId": 4},
            "upperName": "COMPANY_ID",
        },
    }
}


def test_item_fields_are_keyed_by_upper_name_with_items_and_settings() -> None:
    fields = parse_fields(ITEM_FIELDS)
    assert set(fields) == {"STAGE_ID", "UF_CRM_44_1721812814433", "COMPANY_ID"}
    enum = fields["UF_CRM_44_1721812814433"]
    assert enum.items == (("79", "List item #1"), ("80", "List item #2"))
    assert enum.label == "…"
    assert fields["STAGE_ID"].status_type == "DEAL_STAGE"
    assert fields["COMPANY_ID"].parent_entity_type_id == 4


def test_old_api_user_field_label_is_not_its_code() -> None:
    answer = {
        "UF_CRM_1687188367": {
            "type": "string",
            "isRequired": False,
            "isReadOnly": False,
            "isImmutable": False,
            "isMultiple": False,
            "isDynamic": True,
            "title": "UF_CRM_1687188367",
            "listLabel": "Delivery note",
            "formLabel": "Delivery note",
            "filterLabel": "Delivery note",
        }
    }
    assert parse_fields(answer)["UF_CRM_1687188367"].label == "Delivery note"
    assert parse_fields({"X": {"type": "string", "title": "X"}})["X"].label == "X"


@pytest.mark.parametrize("bad", [[], "x", {"A": {"title": "no type"}}, {"A": 5}])
def test_broken_field_lists_are_value_errors(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_fields(bad)


def test_lists_and_the_stage_lists_needed() -> None:
    categories = parse_categories({"categories": [{"id": 0, "name": "General"}, {"id": 3, "name": "B2B"}]})
    assert categories == {0: "General", 3: "B2B"}
    assert parse_statuses([{"STATUS_ID": "NEW", "NAME": "New"}, {"NAME": "no id"}]) == {"NEW": "New"}
    fields = {
        "STAGE_ID": FieldSchema("STAGE_ID", "crm_status", "Stage", status_type="DEAL_STAGE"),
        "SOURCE_ID": FieldSchema("SOURCE_ID", "crm_status", "Source", status_type="SOURCE"),
    }
    assert status_lists_needed(fields, categories) == ["DEAL_STAGE", "DEAL_STAGE_3", "SOURCE"]
    with pytest.raises(ValueError, match="categories"):
        parse_categories([])


def test_schema_round_trips_through_json() -> None:
    again = EntitySchema.from_json(json.loads(json.dumps(DEAL.as_json())))
    assert again == DEAL
    with pytest.raises(ValueError, match="format"):
        EntitySchema.from_json({"format": 0})
    with pytest.raises(ValueError, match="broken"):
        EntitySchema.from_json({"format": 1, "entity": "deal"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
names = st.sampled_from(sorted(DEAL.fields) + sorted(CONTACT.fields)) | st.text(max_size=20)
entry = st.dictionaries(
    st.sampled_from(["ID", "VALUE", "VALUE_TYPE", "DELETE", "X"]), json_values, max_size=4
)


@settings(max_examples=150, deadline=None)
@given(
    op=st.sampled_from(["create", "update", "upsert", "delete"]),
    fields=st.dictionaries(names, json_values | st.lists(entry, max_size=3), max_size=8),
    category=st.none() | st.integers(-2, 5),
    schema=st.sampled_from([DEAL, CONTACT]),
)
def test_validate_never_raises(
    op: str, fields: dict[str, Any], category: int | None, schema: EntitySchema
) -> None:
    for finding in validate(op, fields, schema, category_id=category):
        assert finding.field in fields or finding.kind is FindingKind.REQUIRED_MISSING
        assert finding.message
        assert len(finding.value) <= 80


def _valid_value(spec: FieldSchema) -> st.SearchStrategy[Any]:
    """Values drawn from what the schema itself lists, or the plainest form of the type."""
    by_type: dict[str, st.SearchStrategy[Any]] = {
        "string": st.text(max_size=20),
        "integer": st.integers(-(10**9), 10**9),
        "double": st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
        "char": st.sampled_from(["Y", "N"]),
        "boolean": st.booleans(),
        "date": st.dates().filter(lambda d: d.year >= 1000).map(str),
        "datetime": st.datetimes()
        .filter(lambda d: d.year >= 1000)
        .map(lambda d: d.isoformat(timespec="seconds")),
        "money": st.tuples(st.integers(0, 10**6), st.sampled_from(DEAL.currencies)).map(
            lambda t: f"{t[0]}|{t[1]}"
        ),
        "enumeration": st.sampled_from([i for i, _ in spec.items] or ["0"]),
        "crm_currency": st.sampled_from(DEAL.currencies),
        "user": st.integers(1, 10**6),
        "employee": st.integers(1, 10**6),
        "crm_company": st.integers(1, 10**6)
        | st.builds(lambda k: {"$ref": f"company:{k}"}, st.text(min_size=1)),
        "crm_contact": st.integers(1, 10**6)
        | st.builds(lambda k: {"$ref": f"contact:{k}"}, st.text(min_size=1)),
        "crm_lead": st.integers(1, 10**6),
        "crm": st.sampled_from(["C_2", "CO_3", "D_1", "L_4"]),
        "crm_status": st.sampled_from(sorted(DEAL.statuses.get(spec.status_type or "", {})) or ["?"]),
    }
    value = by_type.get(spec.type, st.just(None))
    if spec.required:
        value = value.filter(lambda v: v not in ("", None))
    return st.lists(value, min_size=1, max_size=3) if spec.multiple else value


WRITABLE = [
    s for s in DEAL.fields.values() if not s.read_only and not s.immutable and s.type != "crm_multifield"
]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), chosen=st.lists(st.sampled_from(WRITABLE), unique=True, max_size=10))
def test_values_built_from_the_schema_have_no_findings(
    data: st.DataObject, chosen: list[FieldSchema]
) -> None:
    fields = {spec.name: data.draw(_valid_value(spec), label=spec.name) for spec in chosen}
    fields = {k: v for k, v in fields.items() if v is not None}
    if fields.get("STAGE_ID") is not None:
        fields["STAGE_ID"] = data.draw(st.sampled_from(sorted(DEAL.statuses["DEAL_STAGE"])))
    assert validate("update", fields, DEAL) == []


@settings(max_examples=100, deadline=None)
@given(data=st.data(), chosen=st.lists(st.sampled_from(WRITABLE), unique=True, min_size=1, max_size=10))
def test_what_the_validator_accepts_the_portal_stores(data: st.DataObject, chosen: list[FieldSchema]) -> None:
    """The other half of "no silent loss": a create that passes validation keeps every field it sent."""
    portal = Portal(CONFIG)
    fields: dict[str, Any] = {"UF_CRM_ORDER_NO": "A-1"}
    for spec in chosen:
        value = data.draw(_valid_value(spec).filter(lambda v: not _ref_or_empty(v)), label=spec.name)
        fields[spec.name] = value
    if "STAGE_ID" in fields:
        category = fields.get("CATEGORY_ID", 0)
        fields["STAGE_ID"] = data.draw(st.sampled_from(sorted(DEAL.statuses[DEAL.stage_list(int(category))])))
    assert validate("create", fields, DEAL) == []
    new_id = portal.call("crm.deal.add", {"fields": fields})[0].value
    row = portal.call("crm.deal.get", {"id": new_id})[0].value
    lost = {name for name in fields if name not in NOT_RETURNED and row.get(name) in (None, [], "")}
    assert lost == set(), {name: fields[name] for name in lost}


def _ref_or_empty(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return any(isinstance(v, dict) or v in ("", None) for v in items)
