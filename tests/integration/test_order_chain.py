"""An order as one chained batch (contact, company, deal linked to both, its rows), through the project's own
client and builders against the emulator: whichever command fails, nothing lands on another customer's deal.

The same chain sent without ``halt`` is the control: it does write onto deal 1, so the test can fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from bitrix_worker.bitrix.client import BitrixClient
from bitrix_worker.bitrix.items import build_chain, productrow_set, ref
from bitrix_worker.bitrix.methods import Command, build_batch, crm_add, parse_batch
from bitrix_worker.emulator import EmulatorAdmin, EmulatorServer
from bitrix_worker.redaction import WebhookUrl

STEPS = ("contact", "company", "deal", "rows")
METHODS = {
    "contact": "crm.contact.add",
    "company": "crm.company.add",
    "deal": "crm.deal.add",
    "rows": "crm.item.productrow.set",
}


def order_commands() -> dict[str, Command]:
    return {
        "contact": crm_add("contact", {"NAME": "Ann", "ORIGIN_ID": "customer-7"}),
        "company": crm_add("company", {"TITLE": "Ann's shop", "ORIGIN_ID": "company-7"}),
        "deal": crm_add(
            "deal", {"TITLE": "order-42", "CONTACT_IDS": [ref("contact")], "COMPANY_ID": ref("company")}
        ),
        "rows": productrow_set("D", ref("deal"), [{"productName": "Mug", "price": 9.5, "quantity": 2}]),
    }


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.fixture
async def admin(emulator: EmulatorServer) -> AsyncIterator[EmulatorAdmin]:
    async with EmulatorAdmin(emulator.base_url) as admin:
        yield admin


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[BitrixClient]:
    async with BitrixClient(
        WebhookUrl.parse(emulator.webhook_url), connect_timeout_s=2, read_timeout_s=5
    ) as c:
        yield c


async def another_customers_deal(client: BitrixClient) -> None:
    """Deal 1, contact 1, company 1 belong to someone else; the order must never touch them."""
    contact = await client.add("contact", {"NAME": "Bob"})
    company = await client.add("company", {"TITLE": "Bob's"})
    deal = await client.add("deal", {"TITLE": "Bob's order", "CONTACT_IDS": [contact], "COMPANY_ID": company})
    assert (contact, company, deal) == (1, 1, 1)


async def send(client: BitrixClient, request: Command) -> Any:
    answer = await client.call(request.method, request.params)
    return parse_batch(answer.result, STEPS)


async def deal_1(admin: EmulatorAdmin) -> tuple[Any, Any, list[Any]]:
    deal = next(d for d in await admin.entities("deal") if d["ID"] == "1")
    return deal["CONTACT_IDS"], deal["COMPANY_ID"], await admin.product_rows("D", 1)


async def test_the_whole_chain_in_one_request(client: BitrixClient, admin: EmulatorAdmin) -> None:
    await another_customers_deal(client)
    outcome = await send(client, build_chain(order_commands()))
    assert (outcome.errors, outcome.not_run) == ({}, set())
    assert outcome.results["deal"] == 2
    deal = next(d for d in await admin.entities("deal") if d["ID"] == "2")
    assert (deal["CONTACT_IDS"], deal["COMPANY_ID"]) == (["2"], "2")
    assert [(r["ownerId"], r["productName"]) for r in await admin.product_rows("D")] == [(2, "Mug")]
    assert await deal_1(admin) == (["1"], "1", [])
    assert (await admin.stats())["requests"] == 4  # three single adds for Bob, one batch for the order


@pytest.mark.parametrize("failing", STEPS)
async def test_a_failure_anywhere_in_the_chain_writes_nothing_onto_another_deal(
    client: BitrixClient, admin: EmulatorAdmin, failing: str
) -> None:
    await another_customers_deal(client)
    await admin.set_faults(rules=[{"method": METHODS[failing], "kind": "invalid", "scope": "command"}])
    outcome = await send(client, build_chain(order_commands()))
    later = set(STEPS[STEPS.index(failing) + 1 :])
    assert set(outcome.errors) == {failing}
    assert outcome.not_run == later  # halted: nothing ran with a substituted result
    assert await deal_1(admin) == (["1"], "1", [])
    for deal in await admin.entities("deal"):
        if deal["ID"] != "1":  # a new deal, if any, links only what this order created
            assert deal["CONTACT_IDS"] in (["2"], [])
            assert deal["COMPANY_ID"] in ("2", None)
    assert all(r["ownerId"] != 1 for r in await admin.product_rows())


@pytest.mark.parametrize("failing", ["contact", "deal"])
async def test_control_without_halt_the_portal_writes_onto_deal_1(
    client: BitrixClient, admin: EmulatorAdmin, failing: str
) -> None:
    """Why ``build_chain`` always halts: the same commands with ``halt=0`` link or fill another deal."""
    await another_customers_deal(client)
    await admin.set_faults(rules=[{"method": METHODS[failing], "kind": "invalid", "scope": "command"}])
    commands = order_commands()
    if failing == "deal":  # the old rows method reads the id with PHP's (int): the map of results is 1
        commands["rows"] = Command(
            "crm.deal.productrows.set", {"id": ref("deal"), "rows": [{"PRODUCT_NAME": "Mug"}]}
        )
    outcome = await send(client, build_batch(commands, halt=False))
    assert set(outcome.errors) == {failing}
    if failing == "deal":
        assert [(r["ownerId"], r["productName"]) for r in await admin.product_rows("D")] == [(1, "Mug")]
    else:
        new_deal = next(d for d in await admin.entities("deal") if d["ID"] == "2")
        assert new_deal["CONTACT_IDS"] == ["1"]  # Bob's contact linked to Ann's order
