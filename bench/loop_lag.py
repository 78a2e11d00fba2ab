"""How long a hot portal's work holds a multi-portal process's event loop.

One emulated portal at standard limits with ``--ops`` creates queued, served by a ``PortalFleet`` in this
process (as ``bitrix-worker run --portals all`` would), while a ticker asks to wake every 1 ms and records
how late it wakes: a lateness of x ms is x ms during which nothing else on the loop could run (a quiet
portal's lone operation included). ``--idle`` serves the same portal with nothing queued: the machine's own
noise on the same clock. Results go to ``bench/results/loop-lag-<time>.json``.

    BENCH_REDIS_URL=redis://127.0.0.1:6397/0 python -m bench.loop_lag --seconds 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.common import RESULTS_DIR, Namespace, ensure_dir, redis_url
from bench.portals import fill
from bitrix_worker.config import load_settings
from bitrix_worker.emulator import EmulatorConfig
from bitrix_worker.emulator.multi import MultiPortalServer
from bitrix_worker.fleet import PortalFleet
from bitrix_worker.mapping import MappingStore
from bitrix_worker.portals.model import PLANS, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key

HOST = "127.0.0.2"


async def ticks(seconds: float) -> list[float]:
    """How late (ms) each 1 ms sleep woke, for ``seconds``."""
    late: list[float] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        late.append((time.perf_counter() - t) * 1000 - 1)
    return sorted(late)


def summary(late: list[float], seconds: float) -> dict[str, Any]:
    def at(q: float) -> float:
        return round(late[min(len(late) - 1, int(len(late) * q))], 2)

    over = [x for x in late if x > 5]
    return {
        "ticks": len(late),
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(late[-1], 1),
        "late_over_5ms": len(over),
        "late_over_5ms_share_of_time": round(sum(over) / 1000 / seconds, 4),
        "top10_ms": [round(x, 1) for x in late[-10:]],
    }


async def run(ops: int, seconds: float, settle_s: float) -> dict[str, Any]:
    r = aioredis.Redis.from_url(redis_url())
    ns = Namespace(r)
    workdir = Path(tempfile.mkdtemp(prefix="loop-lag-"))
    db = f"sqlite+aiosqlite:///{workdir / 'mapping.sqlite3'}"
    key = new_key()
    async with MultiPortalServer({HOST: EmulatorConfig(seed=1)}) as server:
        settings = load_settings(
            portals="all",
            secrets_key=key,
            redis_url=redis_url(),
            database_url=db,
            stream=ns.stream,
            dead_stream=ns.dead,
            group=ns.group,
            consumer="loop-lag",
            log_successes=False,
            log_level="warning",
        )
        registry = await PortalRegistry.connect(db, box=SecretBox([key]))
        url = server.webhook_url(HOST)
        await registry.add(
            PortalRecord(
                "hot", "webhook", url.split("/rest/")[0] + "/rest/", plan=PLANS["standard"], webhook_url=url
            )
        )
        await fill(r, ns.stream, "hot", ops, tag="lag")
        store = await MappingStore.connect(db)
        fleet = PortalFleet(settings, r, store, registry)
        task = asyncio.create_task(fleet.run())
        try:
            await asyncio.sleep(settle_s)  # the loop starts, the initial bucket is spent
            late = await ticks(seconds)
        finally:
            fleet.stop()
            await task
            await store.close()
            await registry.close()
            await ns.cleanup()
            await r.aclose()
        applied = len(server.apps[HOST].portal.store.all("deal"))
    return {"ops_queued": ops, "applied": applied, "window_s": seconds, **summary(late, seconds)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out = {"load_before": os.getloadavg()[0]}
    if args.idle:
        out["idle"] = await run(0, args.seconds, args.settle_s)
    out["hot"] = await run(args.ops, args.seconds, args.settle_s)
    out["load_after"] = os.getloadavg()[0]
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=12_000)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--settle-s", type=float, default=30.0)
    parser.add_argument("--idle", action=argparse.BooleanOptionalAction, default=True)
    parsed = parser.parse_args()
    started = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = asyncio.run(main(parsed))
    print(json.dumps(result, indent=2))
    ensure_dir(RESULTS_DIR)
    raw = {"command": " ".join(sys.argv), "started": started, "cpus": os.cpu_count(), "result": result}
    (RESULTS_DIR / f"loop-lag-{started}.json").write_text(json.dumps(raw, indent=2) + "\n")
