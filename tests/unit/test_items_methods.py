"""Pure builders and parsers for crm.item.*, product rows and batch references (bitrix.items)."""

from __future__ import annotations

from typing import Any

import pytest

from bitrix_worker.bitrix.items import (
    build_chain,
    deal_productrows_get,
    deal_productrows_set,
    item_add,
    item_delete,
    item_fields,
    item_get,
    item_list,
    item_update,
    parse_item,
    parse_items,
    parse_product_rows,
    productrow_list,
    productrow_set,
    ref,
    references,
)
from bitrix_worker.bitrix.methods import Command, crm_add, crm_get
from bitrix_worker.bitrix.querystring import parse_query
from bitrix_worker.emulator.substitution import substitute


def test_item_builders() -> None:
    assert item_add(2, {"title": "t"}) == Command(
        "crm.item.add", {"entityTypeId": 2, "fields": {"title": "t"}}
    )
    assert item_update(31, "5", {"stageId": "S"}).params == {
        "entityTypeId": 31,
        "id": 5,
        "fields": {"stageId": "S"},
    }
    assert item_get(128, 1).params == {"entityTypeId": 128, "id": 1}
    assert item_delete(128, 1).method == "crm.item.delete"
    assert item_fields(7).params == {"entityTypeId": 7}
    cmd = item_list(2, filter={"=originatorId": "w"}, select=["id"], order={"id": "ASC"}, start=50)
    assert cmd.params == {
        "entityTypeId": 2,
        "filter": {"=originatorId": "w"},
        "select": ["id"],
        "order": {"id": "ASC"},
        "start": 50,
    }
    assert item_update(2, ref("deal"), {}).params["id"] == "$result[deal]"


@pytest.mark.parametrize(
    "call",
    [
        lambda: item_add(0, {}),
        lambda: item_add(True, {}),  # type: ignore[arg-type]
        lambda: item_get(2, 0),
        lambda: item_get(2, "x"),
        lambda: item_get(2, "$result deal"),
        lambda: item_list(2, start=-1),
        lambda: productrow_set("C", 1, []),
        lambda: productrow_set("T80", 1, ["Mug"]),  # type: ignore[list-item]
        lambda: productrow_set("D", 1, {"productName": "Mug"}),  # type: ignore[arg-type]
        lambda: productrow_list("d", 1),
        lambda: deal_productrows_set("contact", 1, [{"PRODUCT_NAME": "x"}]),
        lambda: deal_productrows_set("deal", 1, []),
        lambda: deal_productrows_get("smart_invoice", 1),
        lambda: ref("de al"),
        lambda: ref("deal", "[ID]"),
    ],
)
def test_builders_refuse_bad_input(call: Any) -> None:
    with pytest.raises(ValueError, match=r"."):
        call()


def test_product_row_builders() -> None:
    rows = [{"productName": "Mug", "price": 9.5, "quantity": 2}]
    assert productrow_set("D", 7, rows).params == {"ownerType": "D", "ownerId": 7, "productRows": rows}
    assert (
        productrow_set("T4e8", ref("item", "item", "id"), []).params["ownerId"] == "$result[item][item][id]"
    )
    assert productrow_list("SI", 3, start=50).params == {
        "filter": {"=ownerType": "SI", "=ownerId": 3},
        "start": 50,
    }
    assert deal_productrows_set("lead", 4, [{"PRODUCT_NAME": "x"}]) == Command(
        "crm.lead.productrows.set", {"id": 4, "rows": [{"PRODUCT_NAME": "x"}]}
    )
    assert deal_productrows_get("quote", 2).method == "crm.quote.productrows.get"


def test_parsers() -> None:
    assert parse_item({"item": {"id": 5, "title": "t"}}) == {"id": 5, "title": "t"}
    page = parse_items({"items": [{"id": 1}]}, total=51, next_start="50")
    assert (page.items, page.total, page.next) == ([{"id": 1}], 51, 50)
    assert parse_product_rows({"productRows": [{"id": 1}]}) == [{"id": 1}]
    assert parse_product_rows([{"ID": "1"}]) == [{"ID": "1"}]
    assert parse_product_rows({"productRows": []}) == []
    for bad in ({"item": None}, {"item": {"title": "no id"}}, [], 5):
        with pytest.raises(ValueError, match="expected"):
            parse_item(bad)
    for bad_list in ([], {"items": [1]}, None):
        with pytest.raises(ValueError, match="expected"):
            parse_items(bad_list)
    for bad_rows in ({"productRows": None}, "x", [1]):
        with pytest.raises(ValueError, match="expected"):
            parse_product_rows(bad_rows)


def test_references_found_in_nested_params() -> None:
    assert ref("deal") == "$result[deal]"
    assert ref("find", 0, "ID") == "$result[find][0][ID]"
    params = {
        "id": ref("deal"),
        "fields": {"CONTACT_IDS": [ref("c1"), ref("c2", "ID")], "NOTE": "x $total[find]"},
    }
    assert references(params) == {"deal", "c1", "c2", "find"}
    assert references({"TITLE": "costs $5", "N": 3}) == set()


def test_chains_are_halted_and_refer_only_backwards() -> None:
    commands = {
        "contact": crm_add("contact", {"NAME": "Ann"}),
        "deal": crm_add("deal", {"TITLE": "o", "CONTACT_IDS": [ref("contact")]}),
        "rows": productrow_set("D", ref("deal"), [{"productName": "Mug"}]),
    }
    batch = build_chain(commands)
    assert batch.params["halt"] == 1
    method, _, query = batch.params["cmd"]["rows"].partition("?")
    assert (method, parse_query(query)["ownerId"]) == ("crm.item.productrow.set", "$result[deal]")
    with pytest.raises(ValueError, match="refers to \\['rows'\\]"):
        build_chain({"deal": crm_add("deal", {"X": ref("rows")}), "rows": crm_get("deal", 1)})
    with pytest.raises(ValueError, match="refers to \\['deal'\\]"):
        build_chain({"deal": crm_get("deal", ref("deal"))})
    assert crm_get("deal", ref("find", 0, "ID")).params == {"id": "$result[find][0][ID]"}
    with pytest.raises(ValueError, match="empty list"):
        build_chain({"deal": crm_get("deal", 1), "rows": productrow_set("D", ref("deal"), [])})


def test_a_built_chain_resolves_as_the_portal_would() -> None:
    """The encoded command, parsed and substituted like the portal does, carries the earlier result."""
    batch = build_chain(
        {
            "deal": crm_add("deal", {"TITLE": "o"}),
            "rows": productrow_set("D", ref("deal"), [{"productName": "Mug", "price": 9.5}]),
        }
    )
    method, _, query = batch.params["cmd"]["rows"].partition("?")
    params = substitute(parse_query(query), {"result": {"deal": 42}})
    assert method == "crm.item.productrow.set"
    assert params == {
        "ownerType": "D",
        "ownerId": 42,
        "productRows": [{"productName": "Mug", "price": "9.5"}],
    }
