"""The emulator's crm.item.* and crm.type.* over real HTTP on loopback: shapes, shared tables, errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    config = EmulatorConfig(
        smart_process_types=[{"id": 7, "entityTypeId": 1256, "title": "Shipment"}],  # type: ignore[list-item]
    )
    with EmulatorServer(config) as srv:
        yield srv


@pytest.fixture
async def client(server: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.webhook_url, timeout=5) as c:
        yield c


@pytest.fixture
async def admin(server: EmulatorServer) -> AsyncIterator[EmulatorAdmin]:
    async with EmulatorAdmin(server.base_url) as a:
        yield a


async def call(client: httpx.AsyncClient, method: str, **params: Any) -> tuple[int, Any]:
    response = await client.post(method, json=params)
    return response.status_code, response.json()


async def test_deal_via_item_shares_the_crm_deal_table(client: httpx.AsyncClient) -> None:
    status, body = await call(
        client,
        "crm.item.add",
        entityTypeId=2,
        fields={
            "title": "Order 7",
            "opportunity": 19.5,
            "currencyId": "USD",
            "originatorId": "shop",
            "originId": "o7",
        },
    )
    assert status == 200
    item = body["result"]["item"]
    assert (item["id"], item["title"], item["opportunity"], item["entityTypeId"]) == (1, "Order 7", 19.5, 2)
    assert (item["originatorId"], item["originId"], item["categoryId"], item["stageId"]) == (
        "shop",
        "o7",
        0,
        "NEW",
    )
    assert isinstance(item["createdTime"], str)
    assert item["createdBy"] == 1
    _, body = await call(client, "crm.deal.get", id=1)
    deal = body["result"]
    assert (deal["TITLE"], deal["OPPORTUNITY"], deal["ORIGIN_ID"]) == ("Order 7", "19.50", "o7")
    # and back: a deal written with crm.deal.add is an item with camelCase names and typed values
    await call(client, "crm.deal.add", fields={"TITLE": "Old", "COMPANY_ID": 4, "CONTACT_IDS": [3, 5]})
    _, body = await call(client, "crm.item.get", entityTypeId=2, id=2)
    item = body["result"]["item"]
    assert (item["title"], item["companyId"], item["contactId"], item["contactIds"]) == ("Old", 4, 3, [3, 5])
    _, body = await call(client, "crm.deal.get", id=2)
    assert "CONTACT_IDS" not in body["result"]
    assert body["result"]["CONTACT_ID"] == "3"


async def test_pipeline_moves_only_through_crm_item_update(client: httpx.AsyncClient) -> None:
    await call(client, "crm.deal.add", fields={"TITLE": "d", "STAGE_ID": "PREPARATION"})
    _, body = await call(client, "crm.deal.update", id=1, fields={"CATEGORY_ID": 3, "TITLE": "renamed"})
    assert body["result"] is True  # success, and yet...
    _, body = await call(client, "crm.deal.get", id=1)
    assert (body["result"]["CATEGORY_ID"], body["result"]["TITLE"]) == ("0", "renamed")  # ...silently dropped
    _, body = await call(client, "crm.item.update", entityTypeId=2, id=1, fields={"categoryId": 3})
    assert (body["result"]["item"]["categoryId"], body["result"]["item"]["stageId"]) == (3, "C3:PREPARATION")
    _, body = await call(client, "crm.deal.get", id=1)
    assert (body["result"]["CATEGORY_ID"], body["result"]["STAGE_ID"]) == ("3", "C3:PREPARATION")
    _, body = await call(
        client, "crm.item.update", entityTypeId=2, id=1, fields={"categoryId": 5, "stageId": "C5:WON"}
    )
    assert body["result"]["item"]["stageId"] == "C5:WON"
    _, body = await call(client, "crm.deal.fields")
    assert body["result"]["CATEGORY_ID"]["isImmutable"] is True
    await call(client, "crm.deal.add", fields={"TITLE": "e", "CATEGORY_ID": 2})
    _, body = await call(client, "crm.deal.get", id=2)
    assert body["result"]["STAGE_ID"] == "C2:NEW"


async def test_item_write_rules_empty_values_and_booleans(client: httpx.AsyncClient) -> None:
    fields = {"title": "x", "opportunity": 0, "opened": 1, "isManualOpportunity": "y", "comments": ""}
    _, body = await call(client, "crm.item.add", entityTypeId=2, fields=fields)
    item = body["result"]["item"]
    assert (item["opportunity"], item["opened"], item["isManualOpportunity"], item["comments"]) == (
        None,
        "N",
        "Y",
        None,
    )
    status, body = await call(client, "crm.item.add", entityTypeId=2, fields={"currencyId": "GBP"})
    assert (status, body) == (
        400,
        {
            "error": "CRM_FIELD_ERROR_VALUE_NOT_VALID",
            "error_description": 'Invalid value for field "Currency"',
        },
    )


async def test_smart_invoice_and_smart_process_items(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    _, body = await call(
        client, "crm.item.add", entityTypeId=31, fields={"xmlId": "shop:inv-1", "ufCrmSmartInvoiceX": "kept"}
    )
    invoice = body["result"]["item"]
    assert (invoice["id"], invoice["title"], invoice["stageId"], invoice["xmlId"]) == (
        1,
        "Invoice #1",
        "DT31_0:N",
        "shop:inv-1",
    )
    assert invoice["ufCrmSmartInvoiceX"] == "kept"  # crm.item here stores what it is given
    _, body = await call(client, "crm.item.add", entityTypeId=1256, fields={"title": "Box", "categoryId": 9})
    assert (body["result"]["item"]["id"], body["result"]["item"]["stageId"]) == (1, "DT1256_0:NEW")
    _, body = await call(
        client, "crm.item.update", entityTypeId=1256, id=1, fields={"CATEGORY_ID": 4, "id": 99}
    )
    assert (body["result"]["item"]["id"], body["result"]["item"]["categoryId"]) == (1, 4)
    _, body = await call(client, "crm.item.list", entityTypeId=31, filter={"=xmlId": "shop:inv-1"})
    assert [i["id"] for i in body["result"]["items"]] == [1]
    assert body["total"] == 1
    assert "next" not in body
    _, body = await call(client, "crm.item.list", entityTypeId=31, filter={"=XML_ID": "nope"})
    assert body["result"] == {"items": []}
    assert body["total"] == 0
    assert [i["title"] for i in await admin.items(1256)] == ["Box"]
    _, body = await call(client, "crm.item.delete", entityTypeId=31, id=1)
    assert body["result"] == []
    stats = await admin.stats()
    assert stats["items"]["31"] == 0
    assert stats["items"]["1256"] == 1


async def test_origin_filter_on_deals_via_item_list(client: httpx.AsyncClient) -> None:
    for key in ("a", "b", "c"):
        await call(client, "crm.deal.add", fields={"TITLE": key, "ORIGINATOR_ID": "shop", "ORIGIN_ID": key})
    _, body = await call(
        client, "crm.item.list", entityTypeId=2, filter={"=originatorId": "shop", "=originId": "b"}
    )
    assert [(i["id"], i["originId"]) for i in body["result"]["items"]] == [(2, "b")]
    _, body = await call(client, "crm.item.list", entityTypeId=2, order={"id": "desc"})
    assert [i["id"] for i in body["result"]["items"]] == [3, 2, 1]


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("crm.item.get", {"entityTypeId": 2, "id": 5}, ("NOT_FOUND", "Element not found")),
        ("crm.item.update", {"entityTypeId": 2, "id": 5, "fields": {}}, ("NOT_FOUND", "Element not found")),
        ("crm.item.delete", {"entityTypeId": 31, "id": 5}, ("NOT_FOUND", "Element not found")),
        ("crm.item.get", {"entityTypeId": 999, "id": 1}, ("NOT_FOUND", "Smart process not found")),
        ("crm.item.add", {"entityTypeId": 5, "fields": {}}, ("ENTITY_TYPE_NOT_SUPPORTED", None)),
        ("crm.item.get", {"entityTypeId": 2}, (100, "Could not find value for parameter {id}")),
        ("crm.item.add", {"fields": {}}, (100, "Could not find value for parameter {entityTypeId}")),
        ("crm.item.add", {"entityTypeId": 2}, (100, "Could not find value for parameter {fields}")),
        (
            "crm.item.get",
            {"entityTypeId": 2, "id": [1]},
            (100, "Invalid value Array to match with parameter {id}. Should be value of type int."),
        ),
    ],
)
async def test_item_errors(
    client: httpx.AsyncClient, method: str, params: dict[str, Any], expected: tuple[Any, Any]
) -> None:
    status, body = await call(client, method, **params)
    assert status == 400
    assert body["error"] == expected[0]
    if expected[1] is not None:
        assert body["error_description"] == expected[1]
    assert "time" not in body


async def test_item_fields_and_types(client: httpx.AsyncClient) -> None:
    _, body = await call(client, "crm.item.fields", entityTypeId=2)
    fields = body["result"]["fields"]
    assert fields["stageId"]["upperName"] == "STAGE_ID"
    assert fields["createdTime"]["upperName"] == "DATE_CREATE"
    assert (
        fields["categoryId"]["isImmutable"] is True
    )  # as the old API reports it; crm.item.update moves anyway
    _, body = await call(client, "crm.type.list")
    assert [(t["id"], t["entityTypeId"], t["title"]) for t in body["result"]["types"]] == [
        (7, 1256, "Shipment")
    ]
    _, body = await call(client, "crm.type.add", fields={"title": "Returns", "entityTypeId": 130})
    assert body["result"]["type"]["entityTypeId"] == 130
    status, body = await call(client, "crm.type.add", fields={"title": "Bad", "entityTypeId": 200})
    assert (status, body["error"]) == (400, "INVALID_ARG_VALUE")
    _, body = await call(client, "crm.item.add", entityTypeId=130, fields={"title": "r"})
    assert body["result"]["item"]["entityTypeId"] == 130
    _, body = await call(client, "crm.type.list", filter={"entityTypeId": 130})
    assert [t["title"] for t in body["result"]["types"]] == ["Returns"]


async def test_quotes_old_api_and_item_share_a_table(client: httpx.AsyncClient) -> None:
    _, body = await call(
        client, "crm.quote.add", fields={"TITLE": "Q1", "ORIGIN_ID": "dropped", "OPPORTUNITY": 10}
    )
    assert body["result"] == 1
    _, body = await call(client, "crm.item.get", entityTypeId=7, id=1)
    item = body["result"]["item"]
    assert (item["title"], item["stageId"], item["opportunity"]) == ("Q1", "DRAFT", 10.0)
    assert "originId" not in item  # crm.quote.fields documents no external id
    _, body = await call(client, "crm.item.update", entityTypeId=7, id=1, fields={"stageId": "SENT"})
    _, body = await call(client, "crm.quote.get", id=1)
    assert body["result"]["STATUS_ID"] == "SENT"


def test_configured_smart_process_types_are_checked() -> None:
    with pytest.raises(ValidationError, match="out of allowed range"):
        EmulatorConfig(smart_process_types=[{"id": 1, "entityTypeId": 1031, "title": "odd"}])  # type: ignore[list-item]
    assert [t.entity_type_id for t in EmulatorConfig().smart_process_types] == [128]
