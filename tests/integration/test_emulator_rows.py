"""The emulator's product rows over loopback: crm.item.productrow.set|list, crm.deal.productrows.set|get."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bitrix_worker.bitrix.querystring import encode_query
from bitrix_worker.emulator import EmulatorAdmin, EmulatorServer

MUG = {"productName": "Mug", "price": 9.5, "quantity": 2}
TEA = {"productName": "Tea", "price": 4, "quantity": 1, "sort": 20}


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as srv:
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


async def test_item_productrow_set_replaces_the_set(client: httpx.AsyncClient, admin: EmulatorAdmin) -> None:
    await call(client, "crm.deal.add", fields={"TITLE": "order"})
    status, body = await call(
        client, "crm.item.productrow.set", ownerType="D", ownerId=1, productRows=[MUG, TEA]
    )
    assert status == 200
    rows = body["result"]["productRows"]
    assert [
        (r["id"], r["productName"], r["price"], r["quantity"], r["ownerType"], r["ownerId"]) for r in rows
    ] == [
        (1, "Mug", 9.5, 2, "D", 1),
        (2, "Tea", 4, 1, "D", 1),
    ]
    assert (rows[0]["discountTypeId"], rows[0]["taxRate"], rows[0]["taxIncluded"], rows[0]["type"]) == (
        2,
        None,
        "N",
        1,
    )
    _, body = await call(client, "crm.deal.get", id=1)
    assert body["result"]["OPPORTUNITY"] == "23.00"  # amount follows the rows unless it is manual
    # keep the Tea row by id, drop the Mug, add a Cup: replace-all
    tea = {**TEA, "id": 2, "quantity": 3}
    _, body = await call(
        client, "crm.item.productrow.set", ownerType="D", ownerId=1, productRows=[tea, {"productName": "Cup"}]
    )
    assert [(r["id"], r["productName"], r["quantity"]) for r in body["result"]["productRows"]] == [
        (3, "Cup", 1),
        (2, "Tea", 3),
    ]
    _, body = await call(client, "crm.item.productrow.list", filter={"=ownerType": "D", "=ownerId": 1})
    assert [r["id"] for r in body["result"]["productRows"]] == [3, 2]
    assert body["total"] == 2
    assert [r["productName"] for r in await admin.product_rows("D", 1)] == ["Cup", "Tea"]
    _, body = await call(client, "crm.item.productrow.set", ownerType="D", ownerId=1, productRows=[])
    assert body["result"] == {"productRows": []}
    assert await admin.product_rows() == []


async def test_rows_of_smart_invoices_processes_leads_and_quotes(
    client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    await call(client, "crm.item.add", entityTypeId=31, fields={"title": "inv"})
    await call(client, "crm.item.add", entityTypeId=128, fields={"title": "spa"})
    await call(client, "crm.lead.add", fields={"TITLE": "lead"})
    await call(client, "crm.quote.add", fields={"TITLE": "quote"})
    for owner in ("SI", "T80", "L", "Q"):
        status, body = await call(
            client, "crm.item.productrow.set", ownerType=owner, ownerId=1, productRows=[MUG]
        )
        assert (status, body["result"]["productRows"][0]["ownerType"]) == (200, owner)
    _, body = await call(client, "crm.item.get", entityTypeId=128, id=1)
    assert body["result"]["item"]["opportunity"] == 19
    assert sorted(r["ownerType"] for r in await admin.product_rows()) == ["L", "Q", "SI", "T80"]
    await call(client, "crm.item.delete", entityTypeId=128, id=1)
    await call(client, "crm.lead.delete", id=1)
    assert sorted(r["ownerType"] for r in await admin.product_rows()) == [
        "Q",
        "SI",
    ]  # rows go with their owner


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ownerType": "D", "ownerId": 7, "productRows": [MUG]}, ("OWNER_NOT_FOUND", "Owner was not found")),
        ({"ownerType": "C", "ownerId": 1, "productRows": [MUG]}, ("ENTITY_TYPE_NOT_SUPPORTED", None)),
        ({"ownerType": "T81", "ownerId": 1, "productRows": [MUG]}, ("ENTITY_TYPE_NOT_SUPPORTED", None)),
        ({"ownerType": "D", "ownerId": 1, "productRows": ["Mug"]}, ("INVALID_ARG_VALUE", None)),
        ({"ownerType": "D", "productRows": [MUG]}, (100, "Could not find value for parameter {ownerId}")),
        ({"ownerType": "D", "ownerId": 1}, (100, "Could not find value for parameter {productRows}")),
        ({"ownerType": "D", "ownerId": [1], "productRows": [MUG]}, (100, None)),
    ],
)
async def test_item_productrow_set_errors(
    client: httpx.AsyncClient, params: dict[str, Any], expected: tuple[Any, Any]
) -> None:
    await call(client, "crm.deal.add", fields={"TITLE": "order"})
    await call(client, "crm.contact.add", fields={"NAME": "c"})
    status, body = await call(client, "crm.item.productrow.set", **params)
    assert (status, body["error"]) == (400, expected[0])
    if expected[1] is not None:
        assert body["error_description"] == expected[1]


async def test_item_productrow_list_errors(client: httpx.AsyncClient) -> None:
    status, body = await call(client, "crm.item.productrow.list", filter={"=ownerType": "D"})
    assert (status, body["error"]) == (400, "REQUIRED_ARG_MISSING")
    status, body = await call(client, "crm.item.productrow.list", filter={"=ownerType": "D", "=ownerId": 5})
    assert (status, body) == (400, {"error": "ACCESS_DENIED", "error_description": "Access denied"})


async def test_deprecated_deal_productrows(client: httpx.AsyncClient) -> None:
    await call(
        client, "crm.deal.add", fields={"TITLE": "order", "IS_MANUAL_OPPORTUNITY": "Y", "OPPORTUNITY": 100}
    )
    rows = [
        {"PRODUCT_NAME": "Mug", "PRICE": 9.5, "QUANTITY": 2, "OWNER_ID": 99, "NOPE": 1},
        "skipped",
        {"PRICE": 1},
    ]
    status, body = await call(client, "crm.deal.productrows.set", id=1, rows=rows)
    assert (status, body["result"]) == (200, True)
    _, body = await call(client, "crm.deal.productrows.get", id=1)
    got = body["result"]
    assert [
        (r["ID"], r["OWNER_ID"], r["OWNER_TYPE"], r["PRODUCT_NAME"], r["PRICE"], r["QUANTITY"]) for r in got
    ] == [
        ("1", "1", "D", "Mug", 9.5, 2),
        ("2", "1", "D", "[2]", 1, 1),  # neither product nor name: the portal names it after the row id
    ]
    assert got[0]["PRICE_ACCOUNT"] == "9.50"
    assert "NOPE" not in got[0]
    _, body = await call(client, "crm.deal.get", id=1)
    assert body["result"]["OPPORTUNITY"] == "100.00"  # manual amount stays
    # a missing ``rows`` is an empty set: it clears the deal (so never omit it by accident)
    _, body = await call(client, "crm.deal.productrows.set", id=1)
    assert body["result"] is True
    _, body = await call(client, "crm.deal.productrows.get", id=1)
    assert body["result"] == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"id": 0, "rows": []}, ("", "The parameter id is invalid or not defined.")),
        ({"id": 1, "rows": "Mug"}, ("", "The parameter rows must be array.")),
        ({"id": 9, "rows": []}, ("", "Not found")),
        (
            {"id": 1, "rows": [{"PRODUCT_NAME": "x", "DISCOUNT_TYPE_ID": 2}]},
            (
                "ERROR_CORE",
                "Discount Rate (DISCOUNT_RATE) is required if Percentage Discount Type (DISCOUNT_TYPE_ID)"
                " is defined<br>",
            ),
        ),
        (
            {"id": 1, "rows": [{"PRODUCT_NAME": "x", "DISCOUNT_TYPE_ID": 1}]},
            (
                "ERROR_CORE",
                "Discount Sum (DISCOUNT_SUM) is required if Monetary Discount Type (DISCOUNT_TYPE_ID)"
                " is defined<br>",
            ),
        ),
    ],
)
async def test_deprecated_deal_productrows_errors(
    client: httpx.AsyncClient, params: dict[str, Any], expected: tuple[str, str]
) -> None:
    await call(client, "crm.deal.add", fields={"TITLE": "order"})
    await call(client, "crm.deal.productrows.set", id=1, rows=[MUG | {"PRODUCT_NAME": "keep"}])
    status, body = await call(client, "crm.deal.productrows.set", **params)
    assert (status, body) == (400, {"error": expected[0], "error_description": expected[1]})
    _, body = await call(client, "crm.deal.productrows.get", id=1)
    assert [r["PRODUCT_NAME"] for r in body["result"]] == ["keep"]  # a refused set changes nothing


async def test_deprecated_rows_in_a_batch_with_an_empty_set(client: httpx.AsyncClient) -> None:
    """PHP's query encoding has no empty array: ``rows: []`` in a batch command arrives as no ``rows``."""
    await call(client, "crm.deal.add", fields={"TITLE": "order"})
    await call(client, "crm.deal.productrows.set", id=1, rows=[{"PRODUCT_NAME": "Mug"}])
    cmd = {"clear": "crm.deal.productrows.set?" + encode_query({"id": 1, "rows": []})}
    assert cmd["clear"] == "crm.deal.productrows.set?id=1"
    _, body = await call(client, "batch", halt=1, cmd=cmd)
    assert body["result"]["result"] == {"clear": True}
    _, body = await call(client, "crm.deal.productrows.get", id=1)
    assert body["result"] == []
