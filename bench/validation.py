"""Benchmark: CPU cost of validating one operation against a portal's field schema.

The schema is parsed from the emulator's own answers (in process, no HTTP): the standard deal fields, a
second pipeline and a few user fields of common types. Cases: a typical 10-field deal create, a 10-field
update, a create whose one misspelt field triggers the closest-name search, the whole per-unit screening
the worker runs before sending (``Screening`` with the schema in its per-process memo, as it is for all but
one operation every 10 s: merged fields, validate, decide, report), and (for scale) decoding the cached
schema JSON once. CPU time (``time.process_time``) over ``n`` runs, best of ``repeat`` rounds, in
microseconds per call; the share is against the worker's CPU per operation from the newest full benchmark
result (``bench/results/full-*.json``, ``cost.cpu_s_per_1000_ops``) when present.

    .venv/bin/python -m bench.validation [--n 20000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bitrix_worker.config import load_settings
from bitrix_worker.emulator import EmulatorConfig, PipelineConfig, SchemaConfig, UserFieldConfig
from bitrix_worker.emulator.portal import Portal
from bitrix_worker.events import WorkerEvents
from bitrix_worker.operations import Entity, Operation, OpKind, encode_operation
from bitrix_worker.plan import Call, Plan
from bitrix_worker.redis.schemas import SchemaCache
from bitrix_worker.schema import (
    EntitySchema,
    parse_categories,
    parse_currencies,
    parse_fields,
    parse_statuses,
    status_lists_needed,
)
from bitrix_worker.screening import Screening
from bitrix_worker.units import Member, WorkUnit
from bitrix_worker.validation import validate

RESULTS = Path(__file__).resolve().parent / "results"
USER_FIELDS = [
    UserFieldConfig(
        name="UF_CRM_PAYMENT_METHOD",
        type="enumeration",
        label="Payment method",
        items=["Cash", "Card", "Invoice", "PayPal"],
    ),
    UserFieldConfig(name="UF_CRM_DELIVERY_AT", type="datetime", label="Delivery at"),
    UserFieldConfig(name="UF_CRM_WEIGHT", type="double", label="Weight"),
    UserFieldConfig(name="UF_CRM_ORDER_NO", type="string", label="Order number"),
    UserFieldConfig(
        name="UF_CRM_CHANNELS",
        type="enumeration",
        label="Channels",
        multiple=True,
        items=["Web", "Phone", "Shop"],
    ),
]


def deal_schema() -> EntitySchema:
    config = SchemaConfig(
        user_fields={"deal": USER_FIELDS}, pipelines=[PipelineConfig(id=1, name="Wholesale")]
    )
    portal = Portal(EmulatorConfig(crm_schema=config))

    def call(method: str, **params: Any) -> Any:
        return portal.call(method, params)[0].value

    fields = parse_fields(call("crm.deal.fields"))
    categories = parse_categories(call("crm.category.list", entityTypeId=2))
    statuses = {
        n: parse_statuses(call("crm.status.entity.items", entityId=n))
        for n in status_lists_needed(fields, categories)
    }
    return EntitySchema(
        "deal", fields, statuses, categories, parse_currencies(call("crm.currency.list")), 1.0
    )


CREATE = {
    "TITLE": "Order 10042",
    "CATEGORY_ID": 1,
    "STAGE_ID": "C1:NEW",
    "CURRENCY_ID": "EUR",
    "OPPORTUNITY": "1520.50",
    "ASSIGNED_BY_ID": 7,
    "COMPANY_ID": {"$ref": "company:acme-gmbh"},
    "SOURCE_ID": "WEB",
    "UF_CRM_PAYMENT_METHOD": "1001",
    "UF_CRM_DELIVERY_AT": "2026-12-24T10:00:00+01:00",
}
UPDATE = {
    "STAGE_ID": "C1:WON",
    "OPPORTUNITY": 1600,
    "CLOSEDATE": "2026-12-31",
    "COMMENTS": "paid in full",
    "UF_CRM_WEIGHT": 12.5,
    "UF_CRM_ORDER_NO": "10042",
    "UF_CRM_CHANNELS": ["1004", "1005"],
    "CONTACT_IDS": [{"$ref": "contact:c-17"}, 18],
    "OPENED": "Y",
    "PROBABILITY": 100,
}
MISSPELT = {**CREATE, "UF_CRM_PAYMENT_METHD": "1001"}
del MISSPELT["UF_CRM_PAYMENT_METHOD"]


@dataclass(slots=True)
class Pending:
    unit: WorkUnit
    plan: Plan
    screened: dict[str, Any] = field(default_factory=dict)


def screening_case(schema: EntitySchema, fields: dict[str, Any]) -> Callable[[], object]:
    """One unit through ``Screening._screen_one`` exactly as delivery runs it, the schema in the memo."""
    settings = load_settings(webhook_url="https://bench.bitrix24.com/rest/1/bench-secret/")
    cache = SchemaCache(  # the memo kept all run: its one Redis read per 10 s is not what is measured here
        None,  # type: ignore[arg-type]
        settings.keys,
        "bench.bitrix24.com",
        ttl_s=3600.0,
        memo_s=float("inf"),
    )
    live = EntitySchema(schema.entity, schema.fields, schema.statuses, schema.categories, schema.currencies,
                        fetched_at=time.time())  # fmt: skip
    cache._memo["deal"] = (live, time.time())  # what the first load of every 10 s leaves (no Redis here)

    async def fail(entity: str) -> EntitySchema:
        raise AssertionError("the bench must not fetch")

    screening = Screening(settings, cache, fail, events=WorkerEvents())
    op = Operation(op=OpKind.UPDATE, entity=Entity.DEAL, key="k", fields=fields)
    unit = WorkUnit("deal:k", [Member("1-0", encode_operation(op), op)], ["1-0"])
    pending = Pending(unit, Plan(Call.UPDATE, 7, dict(fields)))

    def run() -> object:
        coro = screening._screen_one(pending)
        try:
            coro.send(None)  # an uncontended lock and a memo hit never suspend: no event loop needed
        except StopIteration as done:
            return done.value
        raise AssertionError("screening suspended: it was not a memo hit")

    assert run() is None
    return run


def cpu_us(fn: Callable[[], object], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(n):
            fn()
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def worker_us_per_op() -> tuple[float, str] | None:
    """The worker's CPU per operation in the newest full benchmark, if one was recorded here."""
    for path in sorted(RESULTS.glob("full-*.json"), reverse=True):
        data = json.loads(path.read_text())
        found = _find(data, "cpu_s_per_1000_ops")
        if found is not None:
            return found * 1000, path.name
    return None


def _find(data: Any, key: str) -> float | None:
    if isinstance(data, dict):
        if key in data and isinstance(data[key], int | float):
            return float(data[key])
        data = list(data.values())
    if isinstance(data, list):
        for item in data:
            found = _find(item, key)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    schema = deal_schema()
    assert validate("create", CREATE, schema) == [], validate("create", CREATE, schema)
    assert validate("update", UPDATE, schema) == [], validate("update", UPDATE, schema)
    cached = json.dumps(schema.as_json())
    cases = {
        "create, 10 valid fields": lambda: validate("create", CREATE, schema),
        "update, 10 valid fields": lambda: validate("update", UPDATE, schema),
        "create, 1 misspelt field (closest-name search)": lambda: validate("create", MISSPELT, schema),
        "screen one unit (update, 10 valid fields)": screening_case(schema, UPDATE),
        "decode cached schema JSON (once per refresh)": lambda: EntitySchema.from_json(json.loads(cached)),
    }
    rows = {
        name: round(cpu_us(fn, args.n if "decode" not in name else args.n // 20, args.repeat), 2)
        for name, fn in cases.items()
    }
    reference = worker_us_per_op()
    report: dict[str, Any] = {"fields_in_schema": len(schema.fields), "cpu_us_per_call": rows}
    if reference is not None:
        worker_us, source = reference
        report["worker_cpu_us_per_op"] = round(worker_us, 1)
        report["reference"] = source
        report["share_of_worker_cpu_pct"] = {
            name: round(us / worker_us * 100, 2) for name, us in rows.items() if "decode" not in name
        }
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    print(f"deal schema: {len(schema.fields)} fields; CPU µs per call (best of {args.repeat}):")
    for name, us in rows.items():
        share = report.get("share_of_worker_cpu_pct", {}).get(name)
        extra = f"  ({share} % of the worker's {report['worker_cpu_us_per_op']} µs/op)" if share else ""
        print(f"  {name:<48} {us:>9.2f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
