"""Field validation of the entities written with crm.item.* (quotes, smart invoices, smart processes), end to
end: real Redis, the emulator over HTTP, the schema from ``crm.item.fields``, ``crm.category.list`` and one
stage list per pipeline. crm.item.* ignores names it does not know without an error, so every refusal here
is the worker's, after 0 ``crm.item.add`` calls.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from harness import Bench, open_bench

from bitrix_worker.emulator import EmulatorConfig, UserFieldConfig
from bitrix_worker.emulator.config import SmartProcessType
from bitrix_worker.events import WorkerEvents
from bitrix_worker.worker import Worker

PAYMENT = UserFieldConfig(
    name="UF_CRM_5_PAYMENT_METHOD",
    type="enumeration",
    label="Payment method",
    items=[{"ID": "71", "VALUE": "Cash"}, {"ID": "72", "VALUE": "Card"}],
)
DRIVER = UserFieldConfig(name="UF_CRM_5_DRIVER", type="string", label="Driver")
DELIVERY = SmartProcessType(
    id=5,
    entityTypeId=128,
    title="Delivery",
    pipelines={0: "General", 9: "Express"},
    user_fields=[PAYMENT, DRIVER],
    required=["ufCrm5Driver"],
)


@pytest.fixture
async def bench(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Bench]:
    config = EmulatorConfig(smart_process_types=[DELIVERY])
    async with open_bench(redis_url, key_prefix, tmp_path, config) as b:
        yield b


async def _adds(bench: Bench) -> int:
    return await bench.total_calls("crm.item.add")


async def _dead(bench: Bench) -> dict[str, dict[str, Any]]:
    return {payload["key"]: error for payload, error in await bench.dead()}


async def test_unknown_fields_are_refused_after_zero_calls_in_the_producers_spelling(bench: Bench) -> None:
    camel = {"title": "x", "ufCrm5Driver": "Ann", "ufCrm5PaymentMethd": "71"}
    upper = {"TITLE": "y", "UF_CRM_5_DRIVER": "Bo", "UF_CRM_5_PAYMENT_METHD": "71"}
    await bench.enqueue("create", "d-1", camel, entity="item:128")
    await bench.enqueue("create", "d-2", upper, entity="item:128")
    await bench.enqueue("create", "i-1", {"title": "z", "NOPE_FIELD": 1}, entity="smart_invoice")
    await bench.enqueue("create", "q-1", {"TITLE": "q", "shippingNote": "x"}, entity="quote")
    await bench.enqueue("create", "d-3", {"title": "ok", "ufCrm5Driver": "Cy", "ufCrm5PaymentMethod": "72"},
                        entity="item:128")  # fmt: skip
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 4, "applied": 1}
    assert await _adds(bench) == 1  # only d-3
    dead = await _dead(bench)
    assert {e["class"] for e in dead.values()} == {"invalid_data"}
    assert "did you mean ufCrm5PaymentMethod ('Payment method')?" in dead["d-1"]["description"]
    assert dead["d-2"]["description"].startswith("UF_CRM_5_PAYMENT_METHD (sent as ufCrm5PaymentMethd): ")
    assert "did you mean ufCrm5PaymentMethod" in dead["d-2"]["description"]
    assert "smart_invoice has no field nopeField" in dead["i-1"]["description"]
    assert "quote has no field shippingNote" in dead["q-1"]["description"]
    [item] = await bench.admin.items(128)
    assert item["ufCrm5PaymentMethod"] == "72"


async def test_unknown_fields_are_dropped_when_configured(bench: Bench) -> None:
    bench.with_settings(on_unknown_field="drop")
    await bench.enqueue("create", "i-1", {"title": "z", "NOPE_FIELD": 1}, entity="smart_invoice")
    summary = await bench.run()
    assert summary.outcomes == {"applied": 1}
    [item] = await bench.admin.items(31)
    assert item["title"] == "z"
    assert "nopeField" not in item
    [outcome] = [o for o in await bench.outcomes() if o["outcome"] == "applied"]
    assert outcome["reason"] == "created without dropped fields: NOPE_FIELD (unknown_field)"


async def test_required_missing_on_create_and_values_of_no_list(bench: Bench) -> None:
    bench.with_settings(on_required_missing="reject")
    await bench.enqueue("create", "d-1", {"title": "no driver"}, entity="item:128")
    await bench.enqueue("create", "d-2", {"title": "x", "ufCrm5Driver": "A", "ufCrm5PaymentMethod": "Cash"},
                        entity="item:128")  # fmt: skip
    await bench.enqueue(
        "create", "d-3", {"title": "x", "ufCrm5Driver": "A", "currencyId": "XYZ"}, entity="item:128"
    )
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 3}
    assert await _adds(bench) == 0
    dead = await _dead(bench)
    assert dead["d-1"]["description"].startswith("ufCrm5Driver ('Driver') is required but missing")
    assert "is the label of item 71: send its ID" in dead["d-2"]["description"]
    assert "currencyId = 'XYZ' is not in the list" in dead["d-3"]["description"]


async def test_a_stage_of_another_pipeline_is_refused(bench: Bench) -> None:
    base = {"title": "s", "ufCrm5Driver": "A"}
    await bench.enqueue(
        "create", "d-1", base | {"stageId": "DT128_9:CLIENT"}, entity="item:128"
    )  # default: 0
    await bench.enqueue(
        "create", "d-2", base | {"categoryId": 9, "stageId": "DT128_9:CLIENT"}, entity="item:128"
    )
    await bench.enqueue("create", "i-1", {"stageId": "DT31_0:X"}, entity="smart_invoice")
    await bench.enqueue("create", "i-2", {"stageId": "DT31_0:P"}, entity="smart_invoice")
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 2, "applied": 2}
    dead = await _dead(bench)
    assert "a STATUS_ID of DYNAMIC_128_STAGE_0: DT128_0:NEW" in dead["d-1"]["description"]
    assert "SMART_INVOICE_STAGE_0" in dead["i-1"]["description"]
    [item] = await bench.admin.items(128)
    assert (str(item["categoryId"]), item["stageId"]) == ("9", "DT128_9:CLIENT")
    await bench.enqueue("update", "d-2", {"stageId": "DT128_0:NEW"}, entity="item:128")  # pipeline unknown
    await bench.enqueue("update", "d-2", {"stageId": "DT128_7:NEW"}, entity="item:128")  # of no pipeline
    summary = await bench.run(batch_size=1)
    assert summary.outcomes == {"applied": 1, "dead_lettered": 1}


async def test_crm_item_booleans_refuse_1_which_the_portal_would_store_as_false(bench: Bench) -> None:
    await bench.enqueue("create", "i-1", {"title": "b", "opened": 1}, entity="smart_invoice")
    await bench.enqueue("create", "i-2", {"title": "b", "OPENED": "Y"}, entity="smart_invoice")
    summary = await bench.run()
    assert summary.outcomes == {"dead_lettered": 1, "applied": 1}
    assert "crm.item.* stores 1 as false" in (await _dead(bench))["i-1"]["description"]


class Findings(WorkerEvents):
    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str, str]] = Counter()

    def field_finding(self, kind: str, action: str, entity: str) -> None:
        self.seen[(kind, action, entity)] += 1


async def test_findings_are_counted_under_a_bounded_entity_label(bench: Bench) -> None:
    """Every smart process counts as ``item`` (entity type ids are the producers' to choose)."""
    findings = Findings()
    bench.with_settings(on_unknown_field="warn")
    await bench.enqueue("create", "d-1", {"ufCrm5Driver": "A", "nope": 1}, entity="item:128")
    await bench.enqueue("create", "i-1", {"nope": 1}, entity="smart_invoice")
    async with Worker.open(bench.settings, events=findings) as worker:
        summary = await asyncio.wait_for(worker.run(until_idle=True), 30)
    assert summary.outcomes == {"applied": 2}
    assert findings.seen == {
        ("unknown_field", "warn", "item"): 1,
        ("unknown_field", "warn", "smart_invoice"): 1,
    }


async def test_coalesced_updates_may_spell_one_field_both_ways(bench: Bench) -> None:
    """``TITLE`` then ``title`` of one key are one field when merged (the last value wins), not a clash."""
    await bench.enqueue("create", "d-1", {"title": "a", "ufCrm5Driver": "A"}, entity="item:128", version=1)
    await bench.run()
    await bench.enqueue("update", "d-1", {"TITLE": "b", "UF_CRM_5_NOPE": 1}, entity="item:128", version=2)
    await bench.enqueue("update", "d-1", {"title": "c"}, entity="item:128", version=3)
    summary = await bench.run(batch_size=10)
    assert summary.outcomes == {"applied": 1, "dead_lettered": 1}
    [item] = await bench.admin.items(128)
    assert item["title"] == "c"
    [(payload, error)] = await bench.dead()
    assert payload["version"] == 2
    assert error["description"].startswith("UF_CRM_5_NOPE (sent as ufCrm5Nope): ")
