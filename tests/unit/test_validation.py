"""validate(): every field type accepted and refused at its boundaries, the name rules, the multi-field
delete trap, ``$ref`` ids, and the actions chosen per kind of finding."""

from __future__ import annotations

from typing import Any

import pytest
from fieldschemas import portal_schema

from bitrix_worker.validation import (
    DEFAULT_ACTIONS,
    FindingAction,
    FindingKind,
    decide,
    validate,
)

DEAL = portal_schema("deal")
CONTACT = portal_schema("contact")
BASE = {"UF_CRM_ORDER_NO": "A-1"}  # the deal's required user field
K = FindingKind

# (field, value, expected finding kind or None when accepted)
CASES: list[tuple[str, Any, FindingKind | None]] = [
    # string
    ("TITLE", "Order 42", None),
    ("TITLE", 42, None),
    ("TITLE", 4.5, None),
    ("TITLE", True, K.WRONG_TYPE),
    ("TITLE", {"a": 1}, K.WRONG_TYPE),
    ("TITLE", ["a", "b"], K.NOT_MULTIPLE),
    # integer
    ("PROBABILITY", 50, None),
    ("PROBABILITY", "-5", None),
    ("PROBABILITY", "+7", None),
    ("PROBABILITY", 5.0, None),
    ("PROBABILITY", 5.5, K.WRONG_TYPE),
    ("PROBABILITY", "5.5", K.WRONG_TYPE),
    ("PROBABILITY", "1e3", K.WRONG_TYPE),
    ("PROBABILITY", " 5", K.WRONG_TYPE),
    ("PROBABILITY", False, K.WRONG_TYPE),
    ("UF_CRM_PIECES", "12", None),
    # double
    ("OPPORTUNITY", 1500, None),
    ("OPPORTUNITY", "1500.50", None),
    ("OPPORTUNITY", ".5", None),
    ("OPPORTUNITY", "1e3", None),
    ("OPPORTUNITY", "1,5", K.WRONG_TYPE),
    ("OPPORTUNITY", "1 500", K.WRONG_TYPE),
    ("OPPORTUNITY", float("nan"), K.WRONG_TYPE),
    ("OPPORTUNITY", float("inf"), K.WRONG_TYPE),
    ("OPPORTUNITY", "NaN", K.WRONG_TYPE),
    ("OPPORTUNITY", True, K.WRONG_TYPE),
    ("UF_CRM_WEIGHT", -0.25, None),
    # money
    ("UF_CRM_BUDGET", "100|USD", None),
    ("UF_CRM_BUDGET", "100.50|EUR", None),
    ("UF_CRM_BUDGET", "100", K.WRONG_TYPE),
    ("UF_CRM_BUDGET", "100|usd", K.WRONG_TYPE),
    ("UF_CRM_BUDGET", "100|XYZ", K.NOT_IN_LIST),
    ("UF_CRM_BUDGET", 100, K.WRONG_TYPE),
    # date
    ("BEGINDATE", "2024-02-29", None),
    ("BEGINDATE", "2023-02-29", K.WRONG_TYPE),
    ("BEGINDATE", "2024-13-01", K.WRONG_TYPE),
    ("BEGINDATE", "31.12.2024", K.WRONG_TYPE),
    ("BEGINDATE", "tomorrow", K.WRONG_TYPE),
    ("BEGINDATE", "2024-05-01T10:00:00+03:00", K.WRONG_TYPE),
    ("BEGINDATE", "0999-01-01", K.WRONG_TYPE),
    ("BEGINDATE", 20240101, K.WRONG_TYPE),
    # datetime
    ("UF_CRM_DELIVERY_AT", "2024-05-01T10:00:00+03:00", None),
    ("UF_CRM_DELIVERY_AT", "2024-05-01T10:00:00Z", None),
    ("UF_CRM_DELIVERY_AT", "2024-05-01 10:00", None),
    ("UF_CRM_DELIVERY_AT", "2024-05-01", None),
    ("UF_CRM_DELIVERY_AT", "2024-05-01T25:00:00", K.WRONG_TYPE),
    ("UF_CRM_DELIVERY_AT", "2024-05-01T10", K.WRONG_TYPE),
    ("UF_CRM_DELIVERY_AT", "01.05.2024 10:00", K.WRONG_TYPE),
    # char Y/N
    ("OPENED", "Y", None),
    ("OPENED", "N", None),
    ("OPENED", "y", K.WRONG_TYPE),
    ("OPENED", True, K.WRONG_TYPE),
    ("OPENED", 1, K.WRONG_TYPE),
    # boolean
    ("UF_CRM_GIFT", True, None),
    ("UF_CRM_GIFT", 0, None),
    ("UF_CRM_GIFT", "Y", None),
    ("UF_CRM_GIFT", "1", None),
    ("UF_CRM_GIFT", 2, K.WRONG_TYPE),
    ("UF_CRM_GIFT", "yes", K.WRONG_TYPE),
    # enumeration
    ("UF_CRM_PAYMENT_METHOD", "79", None),
    ("UF_CRM_PAYMENT_METHOD", 80, None),
    ("UF_CRM_PAYMENT_METHOD", "81", K.NOT_IN_LIST),
    ("UF_CRM_PAYMENT_METHOD", "Cash", K.NOT_IN_LIST),
    ("UF_CRM_PAYMENT_METHOD", ["79", "80"], K.NOT_MULTIPLE),
    ("UF_CRM_CHANNELS", ["81", 82], None),
    ("UF_CRM_CHANNELS", "81", None),
    ("UF_CRM_CHANNELS", ["81", "79"], K.NOT_IN_LIST),
    # crm_status: stages of the default pipeline on create, sources, types
    ("STAGE_ID", "NEW", None),
    ("STAGE_ID", "WON", None),
    ("STAGE_ID", "C1:NEW", K.NOT_IN_LIST),
    ("STAGE_ID", "Deal won", K.NOT_IN_LIST),
    ("SOURCE_ID", "WEB", None),
    ("SOURCE_ID", "INSTAGRAM", K.NOT_IN_LIST),
    ("TYPE_ID", "SALE", None),
    ("TYPE_ID", "sale", K.NOT_IN_LIST),
    ("STAGE_ID", 1, K.NOT_IN_LIST),
    # crm_category, crm_currency
    ("CATEGORY_ID", 1, None),
    ("CATEGORY_ID", "0", None),
    ("CATEGORY_ID", 7, K.NOT_IN_LIST),
    ("CATEGORY_ID", "one", K.WRONG_TYPE),
    ("CURRENCY_ID", "EUR", None),
    ("CURRENCY_ID", "eur", K.NOT_IN_LIST),
    ("CURRENCY_ID", "XYZ", K.NOT_IN_LIST),
    # users and links, $refs
    ("ASSIGNED_BY_ID", 1, None),
    ("ASSIGNED_BY_ID", "17", None),
    ("ASSIGNED_BY_ID", 0, K.WRONG_TYPE),
    ("ASSIGNED_BY_ID", "-1", K.WRONG_TYPE),
    ("ASSIGNED_BY_ID", "01", K.WRONG_TYPE),
    ("ASSIGNED_BY_ID", {"$ref": "contact:c-1"}, None),
    ("UF_CRM_MANAGER", 3, None),
    ("COMPANY_ID", 5, None),
    ("COMPANY_ID", {"$ref": "company:acme"}, None),
    ("COMPANY_ID", {"$ref": "contact:acme"}, None),
    ("COMPANY_ID", {"$ref": "company:"}, None),
    ("COMPANY_ID", {"$ref": "planet:x"}, None),
    ("COMPANY_ID", {"$ref": 5}, None),
    ("COMPANY_ID", {"$ref": "company:a", "x": 1}, K.WRONG_TYPE),
    ("COMPANY_ID", "ACME", K.WRONG_TYPE),
    ("TITLE", {"$ref": "company:acme"}, K.WRONG_TYPE),  # a reference is an id: not where text goes
    ("CONTACT_IDS", [1, {"$ref": "contact:c-9"}], None),
    ("CONTACT_IDS", [1, {"$ref": "deal:d"}], None),
    ("CONTACT_IDS", 3, None),
    ("UF_CRM_LINK", "C_2", None),
    ("UF_CRM_LINK", "T80_6", None),
    ("UF_CRM_LINK", {"$ref": "deal:d-1"}, None),
    ("UF_CRM_LINK", "X_2", K.WRONG_TYPE),
    ("UF_CRM_LINK", "C_0", K.WRONG_TYPE),
    # multiple string field
    ("UF_CRM_TAGS", ["a", "b"], None),
    ("UF_CRM_TAGS", ["a", None], K.WRONG_TYPE),
    # clearing a non-required field is fine
    ("COMMENTS", "", None),
    ("COMMENTS", None, None),
]


@pytest.mark.parametrize(("name", "value", "kind"), CASES, ids=[f"{n}={v!r}" for n, v, _ in CASES])
def test_each_type_at_its_boundaries(name: str, value: Any, kind: FindingKind | None) -> None:
    findings = validate("create", {**BASE, name: value}, DEAL)
    assert [f.kind for f in findings] == ([] if kind is None else [kind])
    if kind is not None:
        (finding,) = findings
        assert finding.field == name
        assert finding.expected
        assert name in finding.message


def test_a_misspelt_user_field_names_the_closest_field_and_its_label() -> None:
    (finding,) = validate("update", {"UF_CRM_PAYMENT_METHD": "79"}, DEAL)
    assert finding.kind is K.UNKNOWN_FIELD
    assert finding.field == "UF_CRM_PAYMENT_METHD"
    assert "UF_CRM_PAYMENT_METHOD" in finding.message
    assert "'Payment method'" in finding.message
    (far,) = validate("update", {"TOTALLY_UNKNOWN_FIELD": 1}, DEAL)
    assert far.kind is K.UNKNOWN_FIELD
    assert "drop it silently" in far.message


def test_names_are_exact_as_the_portal_takes_them() -> None:
    (finding,) = validate("update", {"title": "x"}, DEAL)
    assert finding.kind is K.UNKNOWN_FIELD
    assert "TITLE" in finding.message


def test_read_only_and_immutable_on_update() -> None:
    assert [f.kind for f in validate("update", {"DATE_CREATE": "2024-01-01", "ID": 3}, DEAL)] == [
        K.READ_ONLY
    ] * 2
    assert [f.kind for f in validate("update", {"CATEGORY_ID": 1}, DEAL)] == [K.IMMUTABLE]
    assert validate("create", {**BASE, "CATEGORY_ID": 1}, DEAL) == []
    assert validate("upsert", {"CATEGORY_ID": 1}, DEAL) == []


def test_required_missing_on_create_and_cleared_on_update() -> None:
    (missing,) = validate("create", {"TITLE": "x"}, DEAL)
    assert (missing.kind, missing.field) == (K.REQUIRED_MISSING, "UF_CRM_ORDER_NO")
    assert validate("update", {"TITLE": "x"}, DEAL) == []
    assert [f.kind for f in validate("update", {"UF_CRM_ORDER_NO": ""}, DEAL)] == [K.REQUIRED_MISSING]
    assert validate("upsert", {"TITLE": "x"}, DEAL) == []


def test_stage_ids_are_those_of_the_deals_pipeline() -> None:
    assert validate("create", {**BASE, "CATEGORY_ID": 1, "STAGE_ID": "C1:PAID"}, DEAL) == []
    (wrong,) = validate("create", {**BASE, "CATEGORY_ID": 1, "STAGE_ID": "WON"}, DEAL)
    assert wrong.kind is K.NOT_IN_LIST
    assert "DEAL_STAGE_1" in wrong.expected
    assert validate("update", {"STAGE_ID": "C1:PAID"}, DEAL, category_id=1) == []
    assert [f.kind for f in validate("update", {"STAGE_ID": "C1:PAID"}, DEAL, category_id=0)] == [
        K.NOT_IN_LIST
    ]
    # pipeline not known on update: any pipeline's stage passes, a stage of none does not
    assert validate("update", {"STAGE_ID": "C1:PAID"}, DEAL) == []
    assert [f.kind for f in validate("update", {"STAGE_ID": "C9:NEW"}, DEAL)] == [K.NOT_IN_LIST]


def test_a_label_instead_of_an_id_says_which_id_to_send() -> None:
    (finding,) = validate("update", {"UF_CRM_PAYMENT_METHOD": "Cash"}, DEAL)
    assert "item 79" in finding.message
    (stage,) = validate("update", {"STAGE_ID": "Deal won"}, DEAL)
    assert "WON" in stage.message


MULTI: list[tuple[Any, FindingKind | None]] = [
    ([{"VALUE": "+4930123", "VALUE_TYPE": "WORK"}], None),
    ([{"VALUE": "+4930123"}], None),
    ({"n0": {"VALUE": "+4930123", "VALUE_TYPE": "MOBILE"}}, None),
    ([{"ID": 12, "VALUE": "+4930999"}], None),
    ([{"ID": "12", "DELETE": "Y"}], None),
    ([{"ID": 12, "VALUE_TYPE": "HOME"}], K.MULTIFIELD_DELETE),  # the trap: deletes entry 12
    ([{"ID": 12}], K.MULTIFIELD_DELETE),
    ([{"ID": 12, "VALUE": ""}], K.MULTIFIELD_DELETE),
    ([{"VALUE": ""}], K.WRONG_TYPE),
    ([{"ID": 0, "VALUE": "x"}], K.WRONG_TYPE),
    ([{"ID": True, "VALUE": "x"}], K.WRONG_TYPE),
    ([{"VALUE": "+49", "VALUE_TYPE": "CELL"}], K.NOT_IN_LIST),
    ([{"VALUE": "+49", "KIND": "WORK"}], K.WRONG_TYPE),
    ([{"VALUE": ["+49"]}], K.WRONG_TYPE),
    ("+4930123", K.WRONG_TYPE),
    (["+4930123"], K.WRONG_TYPE),
]


@pytest.mark.parametrize(("value", "kind"), MULTI, ids=[repr(v) for v, _ in MULTI])
def test_phone_entries(value: Any, kind: FindingKind | None) -> None:
    findings = validate("update", {"PHONE": value}, CONTACT)
    assert [f.kind for f in findings] == ([] if kind is None else [kind])


def test_email_value_types_differ_from_phone_ones() -> None:
    assert validate("update", {"EMAIL": [{"VALUE": "a@b.c", "VALUE_TYPE": "HOME"}]}, CONTACT) == []
    assert [
        f.kind for f in validate("update", {"EMAIL": [{"VALUE": "a@b.c", "VALUE_TYPE": "MOBILE"}]}, CONTACT)
    ] == [K.NOT_IN_LIST]


def test_value_is_a_truncated_repr() -> None:
    (finding,) = validate("update", {"OPPORTUNITY": "x" * 500}, DEAL)
    assert len(finding.value) <= 80
    assert finding.value.endswith("...")


def test_delete_carries_no_fields_to_check() -> None:
    assert validate("delete", {"NOPE": 1}, DEAL) == []


def test_decide_splits_findings_by_configured_action() -> None:
    findings = validate("update", {"NOPE": 1, "OPPORTUNITY": "1,5", "TITLE": "ok", "ID": 4}, DEAL)
    default = decide(findings, DEFAULT_ACTIONS)
    assert {f.field for f in default.reject} == {"NOPE", "OPPORTUNITY", "ID"}
    actions = dict(DEFAULT_ACTIONS) | {K.UNKNOWN_FIELD: FindingAction.DROP, K.READ_ONLY: FindingAction.WARN}
    chosen = decide(findings, actions)
    assert [f.field for f in chosen.reject] == ["OPPORTUNITY"]
    assert [f.field for f in chosen.warn] == ["ID"]
    assert chosen.drop_fields == {"NOPE"}
    assert chosen.apply({"NOPE": 1, "TITLE": "ok"}) == {"TITLE": "ok"}
