"""Per-entity API choice, names and pipeline moves (bitrix_worker.crm), as tables."""

from __future__ import annotations

import pytest

from bitrix_worker.crm import (
    Api,
    entity_spec,
    owner_type_code,
    split_pipeline_move,
    to_camel,
    to_item_fields,
    to_upper,
)

# name -> (api, entityTypeId, product-row owner, pipeline field, first method of add)
ENTITIES = [
    ("deal", Api.OLD, 2, "D", "CATEGORY_ID", "crm.deal.add"),
    ("contact", Api.OLD, 3, None, None, "crm.contact.add"),
    ("company", Api.OLD, 4, None, None, "crm.company.add"),
    ("lead", Api.OLD, 1, "L", None, "crm.lead.add"),
    ("quote", Api.ITEM, 7, "Q", None, "crm.item.add"),
    ("smart_invoice", Api.ITEM, 31, "SI", "categoryId", "crm.item.add"),
    ("item:128", Api.ITEM, 128, "T80", "categoryId", "crm.item.add"),
    ("item:1256", Api.ITEM, 1256, "T4e8", "categoryId", "crm.item.add"),
]


@pytest.mark.parametrize(("name", "api", "etid", "owner", "category", "add"), ENTITIES)
def test_entity_table(  # noqa: PLR0917 - one argument per table column
    name: str, api: Api, etid: int, owner: str | None, category: str | None, add: str
) -> None:
    spec = entity_spec(name)
    assert (spec.api, spec.entity_type_id, spec.owner_type, spec.category_field) == (
        api,
        etid,
        owner,
        category,
    )
    assert spec.method("add") == add
    assert spec.has_product_rows is (owner is not None)
    assert spec.why
    assert spec.base_params() == ({} if api is Api.OLD else {"entityTypeId": etid})
    assert spec.id_field == ("ID" if api is Api.OLD else "id")


@pytest.mark.parametrize(
    ("name", "fields", "filter_"),
    [
        ("deal", {"ORIGINATOR_ID": "shop", "ORIGIN_ID": "k"}, {"=ORIGINATOR_ID": "shop", "=ORIGIN_ID": "k"}),
        (
            "contact",
            {"ORIGINATOR_ID": "shop", "ORIGIN_ID": "k"},
            {"=ORIGINATOR_ID": "shop", "=ORIGIN_ID": "k"},
        ),
        ("smart_invoice", {"xmlId": "shop:k"}, {"=xmlId": "shop:k"}),
        ("item:130", {"xmlId": "shop:k"}, {"=xmlId": "shop:k"}),
    ],
)
def test_origin_fields(name: str, fields: dict[str, str], filter_: dict[str, str]) -> None:
    spec = entity_spec(name)
    assert spec.origin_values("shop", "k") == fields
    assert spec.origin_filter("shop", "k") == filter_
    assert set(spec.origin_fields) == set(fields)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("order", "unknown entity 'order'"),
        ("item:", "expected item:<entityTypeId>"),
        ("item:0128", "expected item:<entityTypeId>"),
        ("item:abc", "expected item:<entityTypeId>"),
        ("item:2", "entityTypeId 2 is 'deal'; name it so"),
        ("item:31", "entityTypeId 31 is 'smart_invoice'"),
        ("item:193", "expected item:<entityTypeId>"),
        ("item:1031", "expected item:<entityTypeId>"),  # odd numbers from 1030 are not smart processes
        ("DEAL", "unknown entity 'DEAL'"),
    ],
)
def test_bad_entities_have_a_reason(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        entity_spec(name)


@pytest.mark.parametrize(
    ("etid", "code"),
    [(1, "L"), (2, "D"), (7, "Q"), (31, "SI"), (128, "T80"), (192, "Tc0"), (3, None), (5, None)],
)
def test_owner_codes(etid: int, code: str | None) -> None:
    assert owner_type_code(etid) == code


NAMES = [
    # (UPPER_CASE, camelCase, entityTypeId)
    ("TITLE", "title", 2),
    ("STAGE_ID", "stageId", 2),
    ("CATEGORY_ID", "categoryId", 2),
    ("ASSIGNED_BY_ID", "assignedById", 2),
    ("IS_MANUAL_OPPORTUNITY", "isManualOpportunity", 2),
    ("ORIGINATOR_ID", "originatorId", 2),
    ("ORIGIN_ID", "originId", 2),
    ("CONTACT_IDS", "contactIds", 2),
    ("DATE_CREATE", "createdTime", 2),
    ("DATE_MODIFY", "updatedTime", 2),
    ("CREATED_BY_ID", "createdBy", 2),
    ("MODIFY_BY_ID", "updatedBy", 2),
    ("BEGINDATE", "begindate", 2),
    ("MYCOMPANY_ID", "mycompanyId", 7),
    ("STATUS_ID", "stageId", 1),  # a lead's status is its stage in crm.item
    ("STATUS_ID", "stageId", 7),
    ("STATUS_ID", "statusId", 2),
    ("PARENT_ID_1220", "parentId1220", 2),
    ("UF_CRM_10_5186744711", "ufCrm10_5186744711", 1036),
    ("UF_CRM_10_DIGIT", "ufCrm10Digit", 1036),
    ("UF_CRM_3_DIGIT10", "ufCrm_3_DIGIT10", 1036),
    ("UF_CRM_1747309879", "ufCrm_1747309879", 2),
    ("UF_CRM_1721244707107", "ufCrm_1721244707107", 2),
    ("UF_CRM_TAGS", "ufCrmTags", 2),
    ("PRODUCT_NAME", "productName", 0),
    ("DISCOUNT_TYPE_ID", "discountTypeId", 0),
]


@pytest.mark.parametrize(("upper", "camel", "etid"), NAMES)
def test_names_both_ways(upper: str, camel: str, etid: int) -> None:
    assert to_camel(upper, etid) == camel
    assert to_upper(camel, etid) == upper
    assert to_camel(camel, etid) == camel  # already camelCase: unchanged
    assert to_upper(upper, etid) == upper


def test_item_fields_convert_and_refuse_collisions() -> None:
    assert to_item_fields({"TITLE": "t", "stageId": "NEW", "UF_CRM_1_X": 1}, 128) == {
        "title": "t",
        "stageId": "NEW",
        "ufCrm1X": 1,
    }
    with pytest.raises(ValueError, match=r"same crm\.item field"):
        to_item_fields({"TITLE": "a", "title": "b"}, 2)


@pytest.mark.parametrize(
    ("name", "fields", "rest", "move"),
    [
        ("deal", {"TITLE": "t"}, {"TITLE": "t"}, None),
        ("deal", {"CATEGORY_ID": 3, "TITLE": "t"}, {"TITLE": "t"}, {"categoryId": 3}),
        ("deal", {"CATEGORY_ID": 3, "STAGE_ID": "C3:WON"}, {}, {"categoryId": 3, "stageId": "C3:WON"}),
        ("deal", {"STAGE_ID": "WON"}, {"STAGE_ID": "WON"}, None),  # a stage alone stays in crm.deal.update
        ("lead", {"CATEGORY_ID": 3}, {"CATEGORY_ID": 3}, None),  # no pipelines: nothing to move
        ("smart_invoice", {"categoryId": 3}, {"categoryId": 3}, None),  # crm.item.update moves by itself
        (
            "item:128",
            {"categoryId": 3, "stageId": "DT128_3:NEW"},
            {"categoryId": 3, "stageId": "DT128_3:NEW"},
            None,
        ),
    ],
)
def test_pipeline_moves(
    name: str, fields: dict[str, object], rest: dict[str, object], move: dict[str, object] | None
) -> None:
    spec = entity_spec(name)
    got_rest, got_move = split_pipeline_move(spec, fields)
    assert got_rest == rest
    if move is None:
        assert got_move is None
    else:
        assert got_move is not None
        assert (got_move.entity_type_id, got_move.fields) == (spec.entity_type_id, move)
    assert spec.moves_pipeline_separately is (name == "deal")
