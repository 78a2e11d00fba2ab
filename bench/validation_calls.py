"""Benchmark: Bitrix24 calls saved by field validation on the fault mix of ``bench.faults``.

The same workload twice against the same emulator (default portal limits, the injected 500s, limit bursts
and auth outage of ``bench.faults.FaultMix``): once with ``BITRIX_WORKER_VALIDATE_FIELDS=false`` (the
portal refuses the 2% invalid updates, ``CURRENCY_ID: "XXX"``, and the taxonomy's budget of 1 retries each
once: 2 commands per invalid operation) and once with validation on (refused before any call; the schema
fetch itself is counted). Both runs must account for every operation exactly once.

    .venv/bin/python -m bench.validation_calls [operations, default 3000]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import Emulator
from .faults import kind_of, run_ours

SCHEMA_METHODS = ("crm.deal.fields", "crm.currency.list", "crm.category.list", "crm.status.entity.items")


def _figures(result: dict[str, Any]) -> dict[str, Any]:
    calls = result["portal"]["calls"]
    return {
        "http_requests": result["requests"],
        "commands": result["commands"],
        "crm.deal.update": sum(calls.get("crm.deal.update", {}).values()),
        "schema_commands": sum(sum(calls.get(m, {}).values()) for m in SCHEMA_METHODS),
        "wall_s": result["wall_s"],
        "outcomes": result["accounting"]["outcomes"],
        "every_operation_accounted": result["accounting"]["every_operation_accounted"],
    }


async def main(workdir: Path, n: int) -> dict[str, Any]:
    emu = await Emulator.start(workdir, seed=11)
    try:
        off = await run_ours(emu, workdir, n=n, timeout_s=n / 30 + 240, settings={"validate_fields": False})
        on = await run_ours(emu, workdir, n=n, timeout_s=n / 30 + 240)
    finally:
        emu.stop()
    invalid = sum(1 for i in range(n) if kind_of(i) == "invalid")
    a, b = _figures(off), _figures(on)
    return {
        "operations": n,
        "invalid_operations": invalid,
        "validation_off": a,
        "validation_on": b,
        "saved": {
            "http_requests": a["http_requests"] - b["http_requests"],
            "commands": a["commands"] - b["commands"],
            "crm.deal.update": a["crm.deal.update"] - b["crm.deal.update"],
        },
    }


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp), count)), indent=2))
