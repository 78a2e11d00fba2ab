"""The schema of the entities written with crm.item.*: ``crm.item.fields`` parsed by camelCase name, stage
lists per pipeline, the checks that differ for crm.item.* (booleans, PHP-"empty" values) and findings
renamed to the producer's spelling. The portal answers come from the emulator, called in-process."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitrix_worker.bitrix.schemas import item_stage_list
from bitrix_worker.crm import entity_spec, to_camel
from bitrix_worker.emulator import EmulatorConfig, UserFieldConfig
from bitrix_worker.emulator.config import SmartProcessType
from bitrix_worker.emulator.portal import Portal
from bitrix_worker.schema import (
    EntitySchema,
    parse_categories,
    parse_currencies,
    parse_default_category,
    parse_fields,
    parse_statuses,
)
from bitrix_worker.spelling import respell, sent_name
from bitrix_worker.validation import Finding, FindingKind, validate

K = FindingKind
DELIVERY = SmartProcessType(
    id=5,
    entityTypeId=128,
    title="Delivery",
    pipelines={0: "General", 9: "Express"},
    user_fields=[
        UserFieldConfig(name="UF_CRM_5_PAYMENT_METHOD", type="enumeration", label="Payment method",
                        items=[{"ID": "71", "VALUE": "Cash"}, {"ID": "72", "VALUE": "Card"}]),
        UserFieldConfig(name="UF_CRM_5_DRIVER", type="string", label="Driver"),
    ],
    required=["ufCrm5Driver"],
)  # fmt: skip
PORTAL = Portal(EmulatorConfig(smart_process_types=[DELIVERY]))


def call(method: str, **params: Any) -> Any:
    return PORTAL.call(method, params)[0].value


def item_schema(entity: str) -> EntitySchema:
    """What ``fetch_schema`` assembles for a crm.item.* entity (the same parsers, without HTTP)."""
    spec = entity_spec(entity)
    fields = parse_fields(call("crm.item.fields", entityTypeId=spec.entity_type_id), camel=True)
    categories: dict[int, str] = {}
    default = 0
    if spec.category_field is not None:
        answer = call("crm.category.list", entityTypeId=spec.entity_type_id)
        categories, default = parse_categories(answer), parse_default_category(answer)
    lists = {c: item_stage_list(spec.entity_type_id, c) for c in categories}
    names = [*lists.values()] or [fields["stageId"].status_type or ""]
    statuses = {n: parse_statuses(call("crm.status.entity.items", entityId=n)) for n in names}
    currencies = parse_currencies(call("crm.currency.list"))
    return EntitySchema(entity, fields, statuses, categories, currencies, fetched_at=1.0,
                        stage_lists=lists, default_category=default, camel=True)  # fmt: skip


SMART = item_schema("item:128")
INVOICE = item_schema("smart_invoice")
QUOTE = item_schema("quote")


def kinds(op: str, fields: dict[str, Any], schema: EntitySchema = SMART, **kw: Any) -> list[tuple[str, str]]:
    return [(f.kind.value, f.field) for f in validate(op, fields, schema, **kw)]


def test_crm_item_fields_are_keyed_by_their_camel_case_name() -> None:
    assert {"title", "stageId", "categoryId", "ufCrm5PaymentMethod", "ufCrm5Driver"} <= set(SMART.fields)
    assert all(name == name[0].lower() + name[1:] for name in SMART.fields)
    payment = SMART.fields["ufCrm5PaymentMethod"]
    assert (payment.type, payment.label, payment.items) == ("enumeration", "Payment method",
                                                            (("71", "Cash"), ("72", "Card")))  # fmt: skip
    assert payment.user_field
    assert SMART.fields["ufCrm5Driver"].required
    assert SMART.fields["id"].read_only
    assert QUOTE.fields["stageId"].status_type == "QUOTE_STATUS"  # leads' and quotes' STATUS_ID
    upper = parse_fields(call("crm.item.fields", entityTypeId=128))  # without camel: the upperName
    assert "UF_CRM_5_PAYMENT_METHOD" in upper


@pytest.mark.parametrize(
    ("answer", "default"),
    [
        ({"categories": [{"id": 3, "isDefault": "N"}, {"id": 9, "isDefault": "Y"}]}, 9),
        ({"categories": [{"id": 3}]}, 0),
        ({"categories": []}, 0),
        ([], 0),
    ],
)
def test_the_default_pipeline(answer: Any, default: int) -> None:
    assert parse_default_category(answer) == default


@pytest.mark.parametrize(
    ("type_id", "category", "name"),
    [(128, 0, "DYNAMIC_128_STAGE_0"), (1032, 7, "DYNAMIC_1032_STAGE_7"), (31, 2, "SMART_INVOICE_STAGE_2")],
)
def test_stage_list_names(type_id: int, category: int, name: str) -> None:
    assert item_stage_list(type_id, category) == name


def test_schema_round_trips_with_its_stage_lists() -> None:
    again = EntitySchema.from_json(SMART.as_json())
    assert again == SMART
    assert again.stage_lists == {0: "DYNAMIC_128_STAGE_0", 9: "DYNAMIC_128_STAGE_9"}
    legacy = SMART.as_json()
    for key in ("stage_lists", "default_category", "camel"):
        legacy.pop(key)  # a document of the same format written before these keys existed
    assert EntitySchema.from_json(legacy).stage_lists == {}


@pytest.mark.parametrize(
    ("op", "fields", "category", "expected"),
    [
        ("create", {"stageId": "DT128_0:NEW"}, None, []),  # the default pipeline
        ("create", {"stageId": "DT128_9:NEW"}, None, [("not_in_list", "stageId")]),
        ("create", {"categoryId": 9, "stageId": "DT128_9:NEW"}, None, []),
        ("create", {"categoryId": 4}, None, [("not_in_list", "categoryId")]),
        ("update", {"stageId": "DT128_9:NEW"}, None, []),  # pipeline unknown: any pipeline's stage
        ("update", {"stageId": "DT128_9:NEW"}, 0, [("not_in_list", "stageId")]),
        ("update", {"stageId": "DT128_4:NEW"}, None, [("not_in_list", "stageId")]),
    ],
)
def test_stages_belong_to_the_pipeline(
    op: str, fields: dict[str, Any], category: int | None, expected: list[tuple[str, str]]
) -> None:
    required = {"ufCrm5Driver": "A"} if op == "create" else {}
    assert kinds(op, required | fields, category_id=category) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"opened": True}, []),
        ({"opened": "Y"}, []),
        ({"opened": "false"}, []),
        ({"opened": 1}, [("wrong_type", "opened")]),  # crm.item.* would store false
        ({"opened": "1"}, [("wrong_type", "opened")]),
        ({"ufCrm5PaymentMethod": "Cash"}, [("not_in_list", "ufCrm5PaymentMethod")]),
        ({"ufCrm5PaymentMethod": 72}, []),
        ({"ufCrm5Driver": 0}, [("required_missing", "ufCrm5Driver")]),  # 0 becomes null: cleared
        ({"ufCrm5Driver": "0"}, [("required_missing", "ufCrm5Driver")]),
        ({"id": 5}, [("read_only", "id")]),
        ({"currencyId": "XYZ"}, [("not_in_list", "currencyId")]),
    ],
)
def test_crm_item_values(fields: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert kinds("update", fields) == expected


def test_required_missing_on_create_and_the_closest_camel_case_field() -> None:
    assert kinds("create", {"title": "x"}) == [("required_missing", "ufCrm5Driver")]
    [finding] = validate("update", {"ufCrm5PaymentMethd": "71"}, SMART)
    assert "did you mean ufCrm5PaymentMethod ('Payment method')?" in finding.message
    [finding] = validate("update", {"UF_CRM_5_PAYMENT_METHOD": "71"}, SMART)  # not converted: still a hint
    assert "did you mean ufCrm5PaymentMethod" in finding.message
    assert kinds("update", {"stageId": "DT31_0:P"}, INVOICE) == []
    assert kinds("update", {"stageId": "DT31_0:X"}, INVOICE) == [("not_in_list", "stageId")]
    assert kinds("update", {"stageId": "SENT"}, QUOTE) == []


SMART_SPEC = entity_spec("item:128")


def test_findings_are_renamed_to_the_producers_spelling() -> None:
    sent = {"title": "x", "ufCrm5PaymentMethd": "71"}
    found = validate("update", sent, SMART)
    [renamed] = respell(found, SMART_SPEC, ["TITLE", "UF_CRM_5_PAYMENT_METHD"])
    assert renamed.field == "UF_CRM_5_PAYMENT_METHD"
    assert renamed.message.startswith("UF_CRM_5_PAYMENT_METHD (sent as ufCrm5PaymentMethd): item:128 has no")
    assert respell(found, SMART_SPEC, ["ufCrm5PaymentMethd"]) == found  # written as sent: unchanged
    deal = entity_spec("deal")
    assert respell(found, deal, ["X"]) == found  # the old API sends names as written
    assert sent_name(deal, "TITLE") == "TITLE"
    assert sent_name(SMART_SPEC, "UF_CRM_5_DRIVER") == "ufCrm5Driver"


_WORD = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6)
_UPPER = st.lists(_WORD, min_size=1, max_size=3).map("_".join)


@given(names=st.lists(st.one_of(_UPPER, _UPPER.map(to_camel)), min_size=1, max_size=6))
def test_respelled_findings_are_sent_as_what_was_found(names: list[str]) -> None:
    """Whatever the spelling, a renamed finding names a field the producer wrote and that is sent under
    the name the validator found; nothing is lost or added."""
    found = [Finding(K.UNKNOWN_FIELD, sent_name(SMART_SPEC, n), "1", "x", f"m {n}") for n in names]
    renamed = respell(found, SMART_SPEC, names)
    assert len(renamed) == len(found)
    for before, after in zip(found, renamed, strict=True):
        assert after.field in names
        assert sent_name(SMART_SPEC, after.field) == before.field
