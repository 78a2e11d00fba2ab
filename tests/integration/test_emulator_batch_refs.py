"""``$result[...]`` references and ``halt`` in the emulator's batch, over loopback — including the trap.

After a failed command in a ``halt=0`` batch, a reference to it yields the map of earlier results; the old
API casts that to id 1, so rows meant for the new deal land on deal 1. These tests pin that the emulator
reproduces it, so the worker's tests can prove the worker never builds such a chain.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from bitrix_worker.bitrix.querystring import encode_query
from bitrix_worker.emulator import EmulatorAdmin, EmulatorServer

FORM = {"content-type": "application/x-www-form-urlencoded"}


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


def cmd(method: str, **params: Any) -> str:
    return f"{method}?{encode_query(params)}"


async def batch(client: httpx.AsyncClient, commands: dict[str, str], *, halt: int) -> dict[str, Any]:
    response = await client.post("batch", json={"halt": halt, "cmd": commands})
    assert response.status_code == 200
    result: dict[str, Any] = response.json()["result"]
    return result


async def test_a_chain_links_the_contact_and_sets_rows_on_the_new_deal(
    client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    await client.post("crm.deal.add", json={"fields": {"TITLE": "someone else's deal"}})
    commands = {
        "contact": cmd("crm.contact.add", fields={"NAME": "Ann", "ORIGIN_ID": "customer-7"}),
        "deal": cmd("crm.deal.add", fields={"TITLE": "order-1", "CONTACT_IDS": ["$result[contact]"]}),
        "rows": cmd(
            "crm.item.productrow.set",
            ownerType="D",
            ownerId="$result[deal]",
            productRows=[{"productName": "Mug"}],
        ),
        "check": cmd("crm.deal.get", id="$result[deal]"),
        "title": cmd(
            "crm.deal.update",
            id="$result[deal]",
            fields={"COMMENTS": "deal $result[deal] of $result[check][TITLE]"},
        ),
    }
    result = await batch(client, commands, halt=1)
    assert result["result_error"] == []
    assert (result["result"]["contact"], result["result"]["deal"]) == (1, 2)
    assert result["result"]["check"]["CONTACT_ID"] == "1"
    deals = {d["ID"]: d for d in await admin.entities("deal")}
    assert deals["2"]["CONTACT_IDS"] == ["1"]
    assert deals["2"]["COMMENTS"] == "deal 2 of order-1"  # embedded references: numbers become text
    assert [(r["ownerId"], r["productName"]) for r in await admin.product_rows("D")] == [(2, "Mug")]


async def test_halt_stops_the_chain_at_the_failed_command(
    client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    await client.post("crm.deal.add", json={"fields": {"TITLE": "deal 1"}})
    commands = {
        "deal": cmd("crm.deal.add", fields={"TITLE": "order", "CURRENCY_ID": "GBP"}),  # refused
        "rows": cmd("crm.deal.productrows.set", id="$result[deal]", rows=[{"PRODUCT_NAME": "Mug"}]),
    }
    result = await batch(client, commands, halt=1)
    assert result["result"] == []
    assert list(result["result_error"]) == ["deal"]  # ``rows`` never ran: in neither section
    assert await admin.product_rows() == []


async def test_the_trap_without_halt_rows_land_on_deal_1(
    client: httpx.AsyncClient, admin: EmulatorAdmin
) -> None:
    await client.post("crm.deal.add", json={"fields": {"TITLE": "deal 1, another customer's"}})
    commands = {
        "contact": cmd("crm.contact.add", fields={"NAME": "Ann"}),
        "deal": cmd("crm.deal.add", fields={"TITLE": "order", "CURRENCY_ID": "GBP"}),  # refused
        "rows": cmd("crm.deal.productrows.set", id="$result[deal]", rows=[{"PRODUCT_NAME": "Mug"}]),
        "link": cmd("crm.deal.update", id="$result[deal][ID]", fields={"COMPANY_ID": "$result[deal]"}),
    }
    result = await batch(client, commands, halt=0)
    assert list(result["result_error"]) == ["deal"]
    assert result["result"] == {"contact": 1, "rows": True, "link": True}  # "success"...
    assert [(r["ownerId"], r["productName"]) for r in await admin.product_rows("D")] == [
        (1, "Mug")
    ]  # ...on deal 1
    deal1 = next(d for d in await admin.entities("deal") if d["ID"] == "1")
    assert deal1["COMPANY_ID"] == "1"  # the map of earlier results, cast to 1


async def test_the_trap_with_no_earlier_result_is_an_empty_map(client: httpx.AsyncClient) -> None:
    commands = {
        "deal": cmd("crm.deal.add", fields={"CURRENCY_ID": "GBP"}),
        "rows": cmd("crm.deal.productrows.set", id="$result[deal]", rows=[{"PRODUCT_NAME": "Mug"}]),
        "item_rows": cmd(
            "crm.item.productrow.set",
            ownerType="D",
            ownerId="$result[deal]",
            productRows=[{"productName": "x"}],
        ),
    }
    result = await batch(client, commands, halt=0)
    assert result["result_error"]["rows"] == {
        "error": "",
        "error_description": "The parameter id is invalid or not defined.",
    }
    assert result["result_error"]["item_rows"]["error"] == 100  # the typed API refuses an array id


async def test_reference_forms(client: httpx.AsyncClient) -> None:
    await client.post("crm.deal.add", json={"fields": {"TITLE": "first", "ORIGIN_ID": "k1"}})
    commands = {
        "find": cmd("crm.deal.list", filter={"=ORIGIN_ID": "k1"}, select=["ID", "TITLE"]),
        "item": cmd("crm.item.add", entityTypeId=2, fields={"title": "second"}),
        "by_index": cmd("crm.deal.get", id="$result[find][0][ID]"),
        "by_item": cmd("crm.item.get", entityTypeId=2, id="$result[item][item][id]"),
        "total": cmd(
            "crm.deal.update", id="$result[item][item][id]", fields={"COMMENTS": "found $total[find]"}
        ),
        "no_path": cmd("crm.deal.update", id=2, fields={"ADDITIONAL_INFO": "$result stays"}),
        "list": cmd("crm.deal.update", id=2, fields={"TITLE": "x $result[find] y"}),
    }
    result = await batch(client, commands, halt=1)
    assert result["result_error"] == []
    assert result["result"]["by_index"]["TITLE"] == "first"
    assert result["result"]["by_item"]["item"]["title"] == "second"
    response = await client.post("crm.deal.get", json={"id": 2})
    deal = response.json()["result"]
    assert deal["COMMENTS"] == "found 1"
    assert deal["ADDITIONAL_INFO"] == "$result stays"
    assert deal["TITLE"] == "x $result[find] y"  # an array cannot be spliced into text: the reference stays


@pytest.mark.parametrize(
    ("halt", "halts"), [(0, False), (1, True), (False, False), ("0", False), ("false", True)]
)
async def test_halt_is_read_as_php_reads_it(client: httpx.AsyncClient, halt: Any, halts: bool) -> None:
    """``(bool)"false"`` is true in PHP: a form-encoded ``halt=false`` stops the batch."""
    commands = {"bad": cmd("crm.deal.get", id=9), "next": cmd("crm.deal.add", fields={"TITLE": "t"})}
    response = await client.post("batch", content=encode_query({"halt": halt, "cmd": commands}), headers=FORM)
    ran = response.json()["result"]["result"]
    assert (ran == []) is halts


async def test_a_command_that_is_not_a_string_is_skipped_silently(client: httpx.AsyncClient) -> None:
    commands = {
        "obj": {"method": "crm.deal.add", "params": {"fields": {"TITLE": "t"}}},
        "ok": "crm.deal.list",
    }
    response = await client.post("batch", json={"halt": 1, "cmd": commands})
    result = response.json()["result"]
    assert (result["result"], result["result_error"]) == ({"ok": []}, [])
