"""Benchmark 1: sustained delivered updates/s at the portal's default limits (burst 50, drain 2/s).

The deals exist before the clock starts (created at no limits, mapping store seeded), then the emulator's
limits are switched on with an empty bucket and N updates wait in the stream. Workers run
``bitrix-worker run --until-idle`` as subprocesses. The emulator's own call statistics, sampled every
0.25 s, give the applied count over time; the steady state is measured after the burst.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .common import (
    Admin,
    Emulator,
    Namespace,
    Sampler,
    diff_stats,
    enqueue_payloads,
    ensure_dir,
    key_of,
    ok_calls,
    phases,
    precreate_deals,
    redis_url,
    refusals,
    reset_portal_limiter,
    seed_mapping,
    spawn_worker,
    stop_all,
    update_payload,
    wait_all,
    worker_env,
)

PORTAL_LIMIT_OPS_PER_S = 2.0 * 50  # drain 2 requests/s x 50 commands per batch
BURST_OPS = 50 * 50  # the bucket's 50 requests x 50 commands


async def prepare_portal(
    emu: Emulator, admin: Admin, n: int, database_url: str, limits: tuple[int, float] = (50, 2.0)
) -> dict[str, int]:
    """Fresh portal with ``n`` deals, limits on (50/2), an empty bucket, and a seeded mapping store."""
    await admin.reset()
    await admin.limits(limits_enabled=False)
    ids = await precreate_deals(emu.webhook_url, n)
    await seed_mapping(database_url, ids)
    await admin.limits(limits_enabled=True, burst=limits[0], drain_per_s=limits[1])
    await admin.empty_bucket()
    await reset_portal_limiter(emu.webhook_url)
    return ids


def skip_head_for(n: int) -> int:
    """Operations counted as the initial burst: the bucket's 2,500 plus 500 of margin (scaled for small n)."""
    return min(BURST_OPS + 500, n // 3)


async def run_ours(
    emu: Emulator,
    workdir: Path,
    *,
    n: int,
    processes: int,
    timeout_s: float,
    settings: dict[str, Any] | None = None,
    label: str = "",
) -> dict[str, Any]:
    """N updates through ``processes`` worker processes at the portal's default limits."""
    ensure_dir(workdir)
    admin = Admin(emu.base_url)
    client = aioredis.Redis.from_url(redis_url())
    ns = Namespace(client)
    database_url = f"sqlite+aiosqlite:///{workdir / ('mapping-' + ns.prefix.replace(':', '-') + '.sqlite3')}"
    try:
        await prepare_portal(emu, admin, n, database_url)
        await enqueue_payloads(
            client, ns.stream, (update_payload(key_of(i), {"STAGE_ID": "WON"}) for i in range(n))
        )
        before = await admin.stats()
        sampler = Sampler(admin)
        sampler.start()
        started = time.monotonic()
        procs = [
            spawn_worker(
                workdir,
                worker_env(
                    webhook_url=emu.webhook_url,
                    ns=ns,
                    database_url=database_url,
                    consumer=f"w{i}",
                    **(settings or {}),
                ),
                f"{label or 'ours'}-{processes}p-w{i}",
            )
            for i in range(processes)
        ]
        codes = await wait_all(procs, timeout_s)
        elapsed = time.monotonic() - started
        stop_all(procs)
        await sampler.stop()
        after = await admin.stats()
        counters = await ns.counters()
        delta = diff_stats(after, before)
        applied = ok_calls(after, "crm.deal.update") - ok_calls(before, "crm.deal.update")
        requests = delta["requests"]
        result = {
            "client": "bitrix-worker",
            "processes": processes,
            "operations": n,
            "settings": settings or {},
            "exit_codes": codes,
            "wall_s": round(elapsed, 2),
            "applied_by_portal": applied,
            "outcomes": {k: v for k, v in counters.items() if k.startswith("outcome:")},
            "requests": requests,
            "refusals_total": refusals(after) - refusals(before),
            "calls_per_operation": round(requests / n, 4),
            "limit_ops_per_s": PORTAL_LIMIT_OPS_PER_S,
            **phases(
                sampler.samples,
                base=ok_calls(before, "crm.deal.update"),
                total=applied or 1,
                skip_head=skip_head_for(n),
                skip_tail=min(500, n // 10),
            ),
        }
        result["steady_pct_of_limit"] = round(100 * result["steady_ops_per_s"] / PORTAL_LIMIT_OPS_PER_S, 1)
        return result
    finally:
        await ns.cleanup()
        await client.aclose()
        await admin.aclose()


async def main(
    workdir: Path, *, n: int, processes: list[int], settings: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    emu = await Emulator.start(workdir)
    try:
        out = []
        for p in processes:
            out.append(
                await run_ours(emu, workdir, n=n, processes=p, timeout_s=n / 50 + 120, settings=settings)
            )
        return out
    finally:
        emu.stop()


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp), n=count, processes=[1])), indent=2))
