"""Field validation wired into delivery, end to end (real Redis, the emulator over HTTP).

The emulator drops what it does not understand without an error, exactly as Bitrix24 does, so each test
proves that the worker (not the portal) stops the loss: refused after 0 calls, sent without the field, or
sent as it is and counted, as configured; and that a field added on the portal mid-run is accepted after
one refresh, without a restart.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from harness import Bench

from bitrix_worker.events import WorkerEvents
from bitrix_worker.worker import Worker

PAYMENT = {"name": "UF_CRM_PAYMENT_METHOD", "type": "enumeration", "label": "Payment method"}


class Findings(WorkerEvents):
    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str, str]] = Counter()

    def field_finding(self, kind: str, action: str, entity: str) -> None:
        self.seen[(kind, action, entity)] += 1


async def _adds(bench: Bench, entity: str = "deal") -> int:
    return await bench.total_calls(f"crm.{entity}.add")


async def test_misspelt_and_unknown_fields_are_refused_after_zero_calls_naming_the_closest_field(
    bench: Bench,
) -> None:
    await bench.admin.add_field("deal", **PAYMENT, items=["Cash", "Card"])
    await bench.enqueue("create", "o-1", {"TITLE": "x", "UF_CRM_PAYMENT_METHD": "1000"})
    await bench.enqueue("create", "o-2", {"TITLE": "y", "TOTALLY_UNKNOWN_FIELD": "z"})
    await bench.enqueue("create", "o-3", {"TITLE": "z", "UF_CRM_PAYMENT_METHOD": "1001"})
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 2, "applied": 1}
    assert await _adds(bench) == 1  # only the valid one was sent
    dead = {payload["key"]: error for payload, error in await bench.dead()}
    assert "did you mean UF_CRM_PAYMENT_METHOD ('Payment method')?" in dead["o-1"]["description"]
    assert "'1000'" in dead["o-1"]["description"]  # the value, in the dead letter only
    assert dead["o-2"]["description"].startswith("deal has no field TOTALLY_UNKNOWN_FIELD")
    assert {e["class"] for e in dead.values()} == {"invalid_data"}
    (stored,) = await bench.entities()
    assert stored["UF_CRM_PAYMENT_METHOD"] == "1001"


async def test_one_bad_operation_does_not_take_its_keys_other_operations_down(bench: Bench) -> None:
    """Operations of one key coalesce into one command; the bad one is refused alone, the rest go ahead."""
    await bench.enqueue("create", "o-1", {"TITLE": "v1"}, version=1)
    await bench.run()
    await bench.enqueue("update", "o-1", {"TITLE": "v2", "COMMENTS": "two"}, version=2)
    await bench.enqueue("update", "o-1", {"TITLE": "v3", "UF_CRM_NOPE": "x"}, version=3)
    await bench.enqueue("update", "o-1", {"TITLE": "v4"}, version=4)
    await bench.enqueue("update", "o-1", {"TITLE": "v5", "CURRENCY_ID": "XXX"}, version=5)
    summary = await bench.run(batch_size=10)
    assert summary.outcomes == {"applied": 2, "dead_lettered": 2}
    assert await bench.total_calls("crm.deal.update") == 1  # v2 and v4, merged: one command
    outcomes = {o["stream_id"]: o for o in await bench.outcomes()}
    dead = {p["version"]: (e["class"], e["description"]) for p, e in await bench.dead()}
    assert sorted(dead) == [3, 5]
    assert dead[3][0] == "invalid_data"
    assert "UF_CRM_NOPE" in dead[3][1]
    assert "CURRENCY_ID = 'XXX'" in dead[5][1]
    assert {o["outcome"] for o in outcomes.values()} == {"applied", "dead_lettered"}
    (stored,) = await bench.entities()
    assert (stored["TITLE"], stored["COMMENTS"]) == ("v4", "two")
    await bench.enqueue("update", "o-1", {"TITLE": "v4.5"}, version=5)  # v5 was refused: 5 is not stale
    await bench.run()
    (stored,) = await bench.entities()
    assert stored["TITLE"] == "v4.5"


async def test_a_refused_update_leaves_its_neighbours_pipeline_move_and_rows_as_planned(bench: Bench) -> None:
    """The operations left after a refusal are merged as planning merges them: a deal's CATEGORY_ID is still
    its move (not a field crm.deal.update would drop), and the refused operation's rows go nowhere."""
    await bench.admin.add_pipeline(1, "Wholesale", ["NEW", "WON"])
    await bench.enqueue("create", "o-1", {"TITLE": "v1"}, version=1)
    await bench.run()
    await bench.enqueue("update", "o-1", {"TITLE": "v2", "CATEGORY_ID": 1}, version=2)
    await bench.enqueue("update", "o-1", {"UF_CRM_NOPE": "x"}, version=3, products=[{"PRODUCT_NAME": "Lost"}])
    summary = await bench.run(batch_size=10)
    assert summary.outcomes == {"applied": 1, "dead_lettered": 1}
    dead = {p["version"]: e["description"] for p, e in await bench.dead()}
    assert list(dead) == [3]
    assert "UF_CRM_NOPE" in dead[3]
    (stored,) = await bench.entities()
    assert (stored["TITLE"], stored["CATEGORY_ID"]) == ("v2", "1")
    assert await bench.admin.product_rows() == []
    codes = [o["code"] for o in await bench.outcomes() if o["ident"] == "deal:o-1"]
    assert codes == ["created", "moved", "invalid_data"]


async def test_the_first_of_a_keys_updates_refused_alone_too(bench: Bench) -> None:
    await bench.enqueue("create", "o-1", {"TITLE": "v1"}, version=1)
    await bench.run()
    await bench.enqueue("update", "o-1", {"TITLE": "v2", "CLOSED": "maybe"}, version=2)
    await bench.enqueue("update", "o-1", {"TITLE": "v3"}, version=3)
    summary = await bench.run(batch_size=10)
    assert summary.outcomes == {"applied": 1, "dead_lettered": 1}
    ((payload, _),) = await bench.dead()
    assert payload["version"] == 2
    (stored,) = await bench.entities()
    assert stored["TITLE"] == "v3"


async def test_two_bad_operations_with_the_same_bad_field_are_both_refused_alone(bench: Bench) -> None:
    await bench.enqueue("create", "o-1", {"TITLE": "v1"}, version=1)
    await bench.run()
    await bench.enqueue("update", "o-1", {"TITLE": "v2", "UF_CRM_NOPE": "a"}, version=2)
    await bench.enqueue("update", "o-1", {"TITLE": "v3"}, version=3)
    await bench.enqueue("update", "o-1", {"TITLE": "v4", "UF_CRM_NOPE": "b"}, version=4)
    summary = await bench.run(batch_size=10)
    assert summary.outcomes == {"applied": 1, "dead_lettered": 2}
    assert sorted(p["version"] for p, _ in await bench.dead()) == [2, 4]
    (stored,) = await bench.entities()
    assert stored["TITLE"] == "v3"


async def test_a_create_refused_takes_the_updates_merged_into_it_along(bench: Bench) -> None:
    await bench.enqueue("create", "o-1", {"TITLE": "v1", "CURRENCY_ID": "XXX"}, version=1)
    await bench.enqueue("update", "o-1", {"TITLE": "v2"}, version=2)
    summary = await bench.run(batch_size=10)
    assert summary.outcomes == {"dead_lettered": 2}  # nothing to update without the create
    assert await _adds(bench) == 0


async def test_drop_sends_without_the_field_and_the_outcome_says_so(bench: Bench) -> None:
    bench.with_settings(on_unknown_field="drop")
    await bench.enqueue("create", "o-1", {"TITLE": "kept", "UF_CRM_NOPE": "lost", "OPPORTUNITY": "10.5"})
    summary = await bench.run()
    assert summary.outcomes == {"applied": 1}
    (stored,) = await bench.entities()
    assert (stored["TITLE"], float(stored["OPPORTUNITY"])) == ("kept", 10.5)
    (record,) = await bench.outcomes()
    assert (record["outcome"], record["code"]) == ("applied", "created")
    assert record["reason"] == "created without dropped fields: UF_CRM_NOPE (unknown_field)"


async def test_warn_sends_as_is_and_counts_the_finding(bench: Bench) -> None:
    findings = Findings()
    bench.with_settings(on_unknown_field="warn")
    await bench.enqueue("create", "o-1", {"TITLE": "x", "UF_CRM_NOPE": "the portal drops this"})
    async with Worker.open(bench.settings, events=findings) as worker:
        summary = await asyncio.wait_for(worker.run(until_idle=True), 30)
    assert summary.outcomes == {"applied": 1}
    assert await _adds(bench) == 1
    assert findings.seen == {("unknown_field", "warn", "deal"): 1}
    (stored,) = await bench.entities()
    assert "UF_CRM_NOPE" not in stored  # what warn means: the portal dropped it, but it was counted


async def test_pipelines_stages_and_category_on_update(bench: Bench) -> None:
    await bench.admin.add_pipeline(1, "Wholesale", ["NEW", "WON"])
    await bench.admin.add_pipeline(2, "Retail", ["NEW", "WON"])
    await bench.enqueue("create", "o-1", {"TITLE": "a", "CATEGORY_ID": 1, "STAGE_ID": "C1:NEW"})
    await bench.enqueue("create", "o-2", {"TITLE": "b", "CATEGORY_ID": 1, "STAGE_ID": "WON"})  # pipeline 0's
    summary = await bench.run()
    assert summary.outcomes == {"applied": 1, "dead_lettered": 1}
    # on update the old API would drop CATEGORY_ID; the worker moves the deal instead (crm.item.update)
    await bench.enqueue("update", "o-1", {"CATEGORY_ID": 2}, version=2)
    await bench.enqueue("upsert", "o-1", {"STAGE_ID": "C2:WON"}, version=3)  # upsert of a live key: update
    summary = await bench.run()
    assert summary.outcomes == {"applied": 2}
    codes = [r["code"] for r in await bench.outcomes() if r["ident"] == "deal:o-1"]
    assert codes == ["created", "moved", "updated"]
    dead = [(p["key"], p["op"], e["description"]) for p, e in await bench.dead()]
    assert [d[:2] for d in dead] == [("o-2", "create")]
    assert "STAGE_ID = 'WON' is not in the list" in dead[0][2]
    (stored,) = await bench.entities()
    assert (stored["CATEGORY_ID"], stored["STAGE_ID"]) == ("2", "C2:WON")


async def test_upsert_of_a_new_key_is_checked_as_a_create(bench: Bench) -> None:
    await bench.enqueue("upsert", "o-1", {"TITLE": "a", "CATEGORY_ID": 5})  # no such pipeline
    await bench.enqueue("upsert", "o-2", {"TITLE": "b", "CATEGORY_ID": 0})  # allowed on create
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 1, "applied": 1}
    ((payload, error),) = await bench.dead()
    assert payload["key"] == "o-1"
    assert "CATEGORY_ID = 5 is not in the list" in error["description"]


async def test_a_phone_id_without_value_is_refused_instead_of_deleting_the_phone(bench: Bench) -> None:
    phone = {"VALUE": "+100", "VALUE_TYPE": "WORK"}
    await bench.enqueue("create", "c-1", {"NAME": "Ann", "PHONE": [phone]}, entity="contact")
    await bench.run()
    (contact,) = await bench.entities("contact")
    phone_id = contact["PHONE"][0]["ID"]
    await bench.enqueue("update", "c-1", {"PHONE": [{"ID": phone_id}]}, version=2, entity="contact")
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 1}
    assert await bench.total_calls("crm.contact.update") == 0
    ((_, error),) = await bench.dead()
    assert "would delete that entry" in error["description"]
    (contact,) = await bench.entities("contact")
    assert [p["VALUE"] for p in contact["PHONE"]] == ["+100"]


async def test_a_field_added_on_the_portal_mid_run_is_accepted_after_one_refresh(bench: Bench) -> None:
    bench.with_settings(schema_refresh_min_s=0.5)
    async with Worker.open(bench.settings) as worker:
        task = asyncio.create_task(worker.run())
        try:
            await bench.enqueue("create", "o-1", {"TITLE": "before", "UF_CRM_COUPON": "X1"})
            await _until(bench, 1)
            schema_calls = await bench.total_calls("crm.deal.fields")
            await bench.admin.add_field("deal", name="UF_CRM_COUPON", label="Coupon")
            await asyncio.sleep(0.6)  # the cached copy is now old enough for an early refresh
            await bench.enqueue("create", "o-2", {"TITLE": "after", "UF_CRM_COUPON": "X2"})
            await _until(bench, 2)
        finally:
            worker.stop()
            await task
    outcomes = [(o["ident"].split(":")[-1], o["outcome"]) for o in await bench.outcomes()]
    assert outcomes == [("o-1", "dead_lettered"), ("o-2", "applied")]
    assert await bench.total_calls("crm.deal.fields") == schema_calls + 1  # one refresh, no restart
    (stored,) = await bench.entities()
    assert stored["UF_CRM_COUPON"] == "X2"


async def test_a_refusal_the_schema_did_not_predict_refreshes_it_before_the_retry(bench: Bench) -> None:
    """A field made required on the portal after the schema was cached: the portal refuses the create;
    the retry is checked against a refreshed schema and refused before its second call."""
    bench.with_settings(schema_refresh_min_s=0.3, on_required_missing="reject")
    await bench.enqueue("create", "o-0", {"TITLE": "caches the schema"})
    await bench.run()
    await bench.admin.add_field("deal", name="UF_CRM_ORDER_NO", label="Order number", required=True)
    await asyncio.sleep(0.4)
    await bench.enqueue("create", "o-1", {"TITLE": "no order number"})
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 1}
    assert await _adds(bench) == 2  # o-0, and o-1's one refused attempt: no second call
    ((_, error),) = await bench.dead()
    assert (error["class"], error["attempts"]) == ("invalid_data", 1)
    assert "UF_CRM_ORDER_NO ('Order number') is required but missing" in error["description"]


async def test_a_schema_failing_for_a_while_holds_the_operation_then_validates_it(bench: Bench) -> None:
    rule = {"method": "crm.currency.list", "kind": "500", "max_hits": 1}
    await bench.admin.set_faults(rules=[rule])
    await bench.enqueue("create", "o-1", {"TITLE": "x", "UF_CRM_NOPE": "y"})
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 1}  # checked once the schema came: nothing lost
    assert await _adds(bench) == 0
    ((_, error),) = await bench.dead()
    assert (error["class"], error["attempts"]) == ("invalid_data", 0)  # the hold spent no budget


async def test_a_schema_the_portal_refuses_lets_operations_go_out_unvalidated(bench: Bench) -> None:
    findings = Findings()
    await bench.admin.set_faults(rules=[{"method": "crm.currency.list", "kind": "not_found"}])
    await bench.enqueue("create", "o-1", {"TITLE": "x", "UF_CRM_NOPE": "y"})
    async with Worker.open(bench.settings, events=findings) as worker:
        summary = await asyncio.wait_for(worker.run(until_idle=True), 30)
    assert summary.outcomes == {"applied": 1}  # as before validation existed: the portal decides
    assert await _adds(bench) == 1
    assert findings.seen == {("schema_unavailable", "warn", "deal"): 1}


async def test_the_updates_of_a_refused_create_wait_with_it(bench: Bench) -> None:
    await bench.enqueue("create", "o-1", {"TITLE": "x", "CURRENCY_ID": "XXX"})
    await bench.run()
    await bench.enqueue("update", "o-1", {"TITLE": "y"}, version=2)
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 1}
    assert await bench.total_calls("crm.deal.update") + await _adds(bench) == 0
    assert (await bench.outcomes())[-1]["code"] == "create_failed"  # replay the create first, then this


async def test_validation_off_sends_everything(bench: Bench) -> None:
    await bench.enqueue("create", "o-1", {"TITLE": "x", "UF_CRM_NOPE": "y"})
    summary = await bench.run(validate_fields=False)
    assert summary.outcomes == {"applied": 1}
    assert await bench.total_calls("crm.deal.fields") == 0


async def _until(bench: Bench, n: int, timeout_s: float = 15.0) -> list[dict[str, Any]]:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(outcomes := await bench.outcomes()) < n:
        assert asyncio.get_running_loop().time() < deadline, f"fewer than {n} outcomes: {outcomes}"
        await asyncio.sleep(0.05)
    return outcomes  # type: ignore[return-value]
