"""Sharing the portal: another application polls while the worker drains a backlog, with and without
``BITRIX_WORKER_RATE_SHARE``.

``python -m bench.share [window_s] [share ...]`` (default 50 s, shares 1.0 and 0.85; < 2 min for both): for
each share, a fresh portal at the cloud's limits (burst 50, drain 2 requests/s, empty bucket), a backlog of
updates larger than the window can drain, one worker process (``run``), and a second client that calls
``crm.deal.fields`` through the same webhook every 5 s (0.2 requests/s), as a shop's other integration
would. After ``window_s`` both stop. Reported: the other app's calls refused (QUERY_LIMIT_EXCEEDED), the
worker's applied updates per second over the window and after its initial burst, and the refusals the
worker itself got. Saves bench/results/share-<time>.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from .common import (
    RESULTS_DIR,
    Admin,
    Emulator,
    Namespace,
    Sampler,
    enqueue_payloads,
    key_of,
    ok_calls,
    redis_url,
    refusals,
    spawn_worker,
    stop_all,
    update_payload,
    worker_env,
)
from .throughput import prepare_portal

OTHER_APP_PERIOD_S = 5.0  # 0.2 requests/s
BACKLOG = 9000  # more than one worker drains in 55 s: a 2,500 burst, then 100 updates/s at most
STEADY_AFTER_S = 15.0  # the worker's first burst of the bucket is over by then


async def other_app(webhook_url: str, stop_at: float) -> list[str]:
    """Poll ``crm.deal.fields`` every 5 s until ``stop_at``; each call's outcome: ``ok`` or the error code."""
    results: list[str] = []
    async with httpx.AsyncClient(timeout=30) as http:
        next_at = time.monotonic()
        while next_at < stop_at:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            response = await http.post(webhook_url + "crm.deal.fields")
            body = (
                response.json()
                if response.headers.get("content-type", "").startswith("application/json")
                else {}
            )
            results.append(
                "ok" if response.status_code == 200 else str(body.get("error", response.status_code))
            )
            next_at += OTHER_APP_PERIOD_S
    return results


def _rate_between(samples: list[tuple[float, int, int, int]], t0: float, t1: float) -> float:
    inside = [s for s in samples if t0 <= s[0] <= t1]
    if len(inside) < 2:
        return float("nan")
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


async def one_run(emu: Emulator, workdir: Path, *, share: float, window_s: float) -> dict[str, Any]:
    admin = Admin(emu.base_url)
    client = aioredis.Redis.from_url(redis_url())
    ns = Namespace(client)
    database_url = f"sqlite+aiosqlite:///{workdir / ('mapping-' + ns.prefix.replace(':', '-') + '.sqlite3')}"
    try:
        await prepare_portal(emu, admin, BACKLOG, database_url)
        await enqueue_payloads(
            client, ns.stream, (update_payload(key_of(i), {"STAGE_ID": "WON"}) for i in range(BACKLOG))
        )
        before = await admin.stats()
        sampler = Sampler(admin, interval_s=0.5)
        sampler.start()
        env = worker_env(
            webhook_url=emu.webhook_url, ns=ns, database_url=database_url, consumer="w0", rate_share=share
        )
        worker = spawn_worker(workdir, env, f"share-{share}", until_idle=False)
        other = await other_app(emu.webhook_url, time.monotonic() + window_s)
        stop_all([worker])
        await sampler.stop()
        after = await admin.stats()
        applied = ok_calls(after, "crm.deal.update") - ok_calls(before, "crm.deal.update")
        refused = sum(1 for r in other if r != "ok")
        return {
            "rate_share": share,
            "window_s": window_s,
            "other_app_calls": len(other),
            "other_app_refused": refused,
            "other_app_refused_pct": round(100 * refused / len(other), 1) if other else None,
            "other_app_errors": sorted({r for r in other if r != "ok"}),
            "worker_applied": applied,
            "worker_ops_per_s": round(applied / window_s, 1),
            "worker_steady_ops_per_s": round(_rate_between(sampler.samples, STEADY_AFTER_S, window_s), 1),
            "refusals_total": refusals(after) - refusals(before),
            "worker_refusals": refusals(after) - refusals(before) - refused,
        }
    finally:
        await ns.cleanup()
        await client.aclose()
        await admin.aclose()


async def main(workdir: Path, window_s: float, shares: tuple[float, ...]) -> list[dict[str, Any]]:
    emu = await Emulator.start(workdir)
    try:
        rows = []
        for share in shares:
            rows.append(await one_run(emu, workdir, share=share, window_s=window_s))
            print(json.dumps(rows[-1]), flush=True)
        return rows
    finally:
        emu.stop()


if __name__ == "__main__":
    window = float(sys.argv[1]) if len(sys.argv) > 1 else 50.0
    values = tuple(float(v) for v in sys.argv[2:]) or (1.0, 0.85)
    started = time.gmtime()
    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(main(Path(tmp), window, values))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"share-{time.strftime('%Y%m%dT%H%M%SZ', started)}.json"
    command = f"python -m bench.share {' '.join(sys.argv[1:])}".strip()
    record = {"command": command, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", started), "rows": found}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"saved {out.relative_to(RESULTS_DIR.parent.parent)}")
