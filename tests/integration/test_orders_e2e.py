"""Orders end to end: the Lua turns (an operation that refers to a key waits for that key's earlier
operations) and the Python side (references resolved from the mapping store, two-phase batches, rows)
working together in the real worker against the emulator.

An order is three operations enqueued back to back, as a producer writes them: a contact upsert, a deal
upsert whose ``CONTACT_ID`` is ``{"$ref": "contact:<key>"}``, with its product rows in ``products``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any

from harness import Bench

from bitrix_worker.redis.deadletter import DeadLetters
from bitrix_worker.worker import Worker

ROWS = [
    {"PRODUCT_NAME": "Mug", "PRICE": 9.5, "QUANTITY": 2},
    {"PRODUCT_NAME": "Plate", "PRICE": 4, "QUANTITY": 1},
    {"PRODUCT_NAME": "Bowl", "PRICE": 6, "QUANTITY": 3},
]


async def enqueue_order(bench: Bench, n: int, *, rows: list[dict[str, Any]] | None = None) -> None:
    await bench.enqueue("upsert", f"customer-{n}", {"NAME": f"Customer {n}"}, entity="contact")
    fields = {"TITLE": f"Order {n}", "CONTACT_ID": {"$ref": f"contact:customer-{n}"}}
    await bench.enqueue("upsert", f"order-{n}", fields, products=ROWS if rows is None else rows)


async def by_origin(bench: Bench, entity: str, key: str) -> dict[str, Any]:
    found = [e for e in await bench.entities(entity) if e.get("ORIGIN_ID") == key]
    assert len(found) == 1, (entity, key, found)
    return found[0]


async def assert_order(bench: Bench, n: int, rows: list[dict[str, Any]] | None = None) -> None:
    """The order's deal exists once, is linked to its own contact, and carries exactly its rows."""
    contact = await by_origin(bench, "contact", f"customer-{n}")
    deal = await by_origin(bench, "deal", f"order-{n}")
    assert str(deal["CONTACT_ID"]) == str(contact["ID"]), (n, deal, contact)
    got = await bench.admin.product_rows("D", int(deal["ID"]))
    want = ROWS if rows is None else rows
    assert [(r["productName"], r["quantity"]) for r in got] == [
        (r["PRODUCT_NAME"], r["QUANTITY"]) for r in want
    ]


async def test_an_order_enqueued_back_to_back_is_linked_in_one_run(bench: Bench) -> None:
    # a contact of someone else first, so a wrong id (e.g. an unresolved ref sent as 0 or 1) would show
    await bench.enqueue("create", "other", {"NAME": "Other"}, entity="contact")
    await bench.run()
    for n in range(3):
        await enqueue_order(bench, n)
    await bench.run(batch_size=50)  # all six operations are read in one claim
    for n in range(3):
        await assert_order(bench, n)
    assert await bench.dead() == []
    outcomes = await bench.outcomes()
    assert [o["outcome"] for o in outcomes] == ["applied"] * 7
    assert await bench.total_calls("crm.contact.add") == 4
    assert await bench.total_calls("crm.deal.add") == 3


async def test_the_deal_waits_for_a_contact_whose_create_fails_transiently(bench: Bench) -> None:
    await bench.admin.set_faults(
        rules=[{"method": "crm.contact.add", "scope": "any", "sequence": ["500", "500", "500"]}]
    )
    await enqueue_order(bench, 1)
    await bench.run()
    await assert_order(bench, 1)
    assert await bench.dead() == []
    codes = {o["ident"]: (o["outcome"], o["code"]) for o in await bench.outcomes()}
    assert codes == {"contact:customer-1": ("applied", "created"), "deal:order-1": ("applied", "created")}
    assert (await bench.admin.stats())["faults_injected"]  # the contact really failed first


async def test_a_dead_lettered_contact_dead_letters_the_deal_naming_the_ref_and_replay_applies_both(
    bench: Bench,
) -> None:
    await bench.admin.set_faults(rules=[{"method": "crm.contact.add", "scope": "any", "kind": "invalid"}])
    await enqueue_order(bench, 1)
    await bench.run()
    dead = await bench.dead()
    assert [p["key"] for p, _ in dead] == ["customer-1", "order-1"]
    error = dead[1][1]
    assert '{"$ref": "contact:customer-1"}' in error["reason"]
    contact_dead_id = (await bench.redis.xrange(bench.settings.dead_stream))[0][0].decode()
    assert contact_dead_id in error["reason"]
    assert await bench.total_calls("crm.deal.add") == 0  # never sent with a guess
    assert await bench.entities() == []
    codes = [o["code"] for o in await bench.outcomes()]
    assert codes[-1] == "ref_unresolved"
    # replay the contact, then the deal: both applied, linked
    await bench.admin.clear_faults()
    dl = DeadLetters(bench.redis, bench.settings.keys)
    await dl.replay([e for e in await dl.entries() if e.key == "contact:customer-1"])
    await bench.run()
    await dl.replay([e for e in await dl.entries() if e.key == "deal:order-1"])
    await bench.run()
    await assert_order(bench, 1)
    assert await dl.entries() == []


async def test_replaying_both_at_once_in_stream_order_applies_both(bench: Bench) -> None:
    await bench.admin.set_faults(rules=[{"method": "crm.contact.add", "scope": "any", "kind": "invalid"}])
    await enqueue_order(bench, 1)
    await bench.run()
    await bench.admin.clear_faults()
    dl = DeadLetters(bench.redis, bench.settings.keys)
    everything, _ = await dl.select(everything=True)  # oldest first, as `dlq replay --all` takes them
    await dl.replay(everything)  # the contact first, the deal right behind it
    await bench.run(batch_size=50)
    await assert_order(bench, 1)
    assert await dl.entries() == []


async def test_a_later_order_update_replaces_the_rows_and_keeps_the_link(bench: Bench) -> None:
    await enqueue_order(bench, 1)
    await enqueue_order(bench, 1, rows=ROWS[:1])  # same order again: contact updated, rows replaced
    await bench.run(batch_size=50)
    await assert_order(bench, 1, rows=ROWS[:1])
    assert await bench.total_calls("crm.contact.add") == 1
    assert await bench.total_calls("crm.deal.add") == 1


async def test_two_workers_with_faults_link_every_order_once(bench: Bench) -> None:
    orders = 30
    await bench.admin.set_faults(
        hang_s=2.5,
        rules=[
            {"method": "*", "kind": "500", "probability": 0.1, "scope": "any"},
            {"method": "*", "kind": "timeout_commit", "probability": 0.05, "scope": "request"},
        ],
    )
    for n in range(orders):
        await enqueue_order(bench, n, rows=ROWS[: 1 + n % 3])
    settings = [bench.settings.model_copy(update={"consumer": f"w{i}", "batch_size": 8}) for i in (1, 2)]

    async def one(s: Any) -> None:
        async with Worker.open(s) as worker:
            await asyncio.wait_for(worker.run(until_idle=True), 60)

    await asyncio.gather(*(one(s) for s in settings))
    await bench.run()  # whatever a scheduled retry left when both went idle
    await bench.admin.clear_faults()
    dead = {p["key"] for p, _ in await bench.dead()}
    contacts = await bench.entities("contact")
    deals = await bench.entities("deal")
    assert len({c["ORIGIN_ID"] for c in contacts}) == len(contacts)  # no duplicate contacts
    assert len({d["ORIGIN_ID"] for d in deals}) == len(deals)  # no duplicate deals
    checked = 0
    for n in random.Random(3).sample(range(orders), orders):
        if f"order-{n}" in dead or f"customer-{n}" in dead:
            continue
        await assert_order(bench, n, rows=ROWS[: 1 + n % 3])
        checked += 1
    assert checked >= orders // 2, dead


def readme_order() -> list[str]:
    """The payloads of the README's worked example of one order, as a producer would copy them."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- order-example:start", 1)[1].split("<!-- order-example:end -->", 1)[0]
    found = re.findall(r"^XADD bitrix:operations \* payload '(.*)'$", block, flags=re.M)
    assert len(found) == 3, block
    return found


async def test_the_readmes_worked_order_applies_as_documented(bench: Bench) -> None:
    for payload in readme_order():
        json.loads(payload)  # valid JSON as printed
        await bench.enqueue_raw({"payload": payload})
    await bench.run(batch_size=50)
    company = await by_origin(bench, "company", "shop-7")
    contact = await by_origin(bench, "contact", "customer-7")
    deal = await by_origin(bench, "deal", "order-42")
    assert str(contact["COMPANY_ID"]) == str(company["ID"])
    assert (str(deal["CONTACT_ID"]), str(deal["COMPANY_ID"])) == (str(contact["ID"]), str(company["ID"]))
    rows = await bench.admin.product_rows("D", int(deal["ID"]))
    assert [(r["productName"], r["quantity"]) for r in rows] == [("Mug", 2), ("Plate", 1), ("Bowl", 3)]
    outcomes = await bench.outcomes()
    assert [o["outcome"] for o in outcomes] == ["applied"] * 3
    assert outcomes[-1]["reason"] == "created; product rows set (3)"
    # the same three again: the same entities, updated
    for payload in readme_order():
        await bench.enqueue_raw({"payload": payload})
    await bench.run(batch_size=50)
    assert [len(await bench.entities(e)) for e in ("company", "contact", "deal")] == [1, 1, 1]
    assert len(await bench.admin.product_rows("D", int(deal["ID"]))) == 3


async def test_rows_of_batches_waiting_at_once_share_a_request(bench: Bench) -> None:
    """Phase 2 of batches delivered at the same time travels in one request (``packing``): with the
    limiter slow enough that requests queue, 8 deals in batches of 2 need fewer than 4 + 4 requests."""
    for n in range(8):
        await bench.enqueue("create", f"customer-{n}", {"NAME": f"C{n}"}, entity="contact")
    await bench.run(batch_size=50)
    before = int((await bench.admin.stats())["requests"])
    for n in range(8):
        fields = {"TITLE": f"Order {n}", "CONTACT_ID": {"$ref": f"contact:customer-{n}"}}
        await bench.enqueue("create", f"order-{n}", fields, products=ROWS)
    await bench.run(batch_size=2, concurrency=4, rate_burst=1, rate_per_s=5)
    used = int((await bench.admin.stats())["requests"]) - before
    for n in range(8):
        await assert_order(bench, n)
    assert await bench.dead() == []
    assert used < 8, used  # 4 entity batches; their rows sets packed into fewer than 4 requests
