"""Which ``rate_safety`` reaches >= 95% of the portal's ceiling without refusals (benchmark 1's evidence).

``BENCH_PROCESSES=P python -m bench.sweep [N] [safety ...]``: P worker processes (default 1), N updates per
value (default 8,000; values 0.95 0.97 0.98 0.99 1.0), steady state after the burst, refusals from the
emulator. Saves bench/results/sweep-<time>.json, which docs/benchmarks.md shows.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR, Emulator
from .throughput import run_ours

DEFAULT_VALUES = (0.95, 0.97, 0.98, 0.99, 1.0)


async def sweep(workdir: Path, n: int, values: tuple[float, ...], processes: int = 1) -> list[dict[str, Any]]:
    emu = await Emulator.start(workdir)
    try:
        rows = []
        for safety in values:
            r = await run_ours(
                emu,
                workdir,
                n=n,
                processes=processes,
                timeout_s=n / 40 + 120,
                settings={"rate_safety": safety},
                label=f"sweep-{safety}",
            )
            rows.append(
                {
                    "rate_safety": safety,
                    "processes": processes,
                    "steady_ops_per_s": r["steady_ops_per_s"],
                    "steady_pct_of_limit": r["steady_pct_of_limit"],
                    "steady_refusals": r["steady_refusals"],
                    "refusals_total": r["refusals_total"],
                    "applied": r["applied_by_portal"],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        return rows
    finally:
        emu.stop()


def save(rows: list[dict[str, Any]], command: str, started: time.struct_time) -> Path:
    """bench/results/sweep-<time>.json; docs/benchmarks.md shows every sweep file found there."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"sweep-{time.strftime('%Y%m%dT%H%M%SZ', started)}.json"
    record = {"command": command, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", started), "rows": rows}
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    vals = tuple(float(v) for v in sys.argv[2:]) or DEFAULT_VALUES
    procs = int(os.environ.get("BENCH_PROCESSES", "1"))
    started = time.gmtime()
    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(sweep(Path(tmp), count, vals, procs))
    save(found, f"BENCH_PROCESSES={procs} python -m bench.sweep {' '.join(sys.argv[1:])}".strip(), started)
