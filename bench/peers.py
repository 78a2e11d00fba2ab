"""Benchmark 2: the same update workload through fast_bitrix24, b24pysdk and the naive seed-style worker.

All start from the state benchmark 1 starts from: the deals exist, the portal's limits are on (burst 50,
drain 2/s) with an empty bucket. fast_bitrix24 gets all N updates in one ``call('crm.deal.update', items)``,
b24pysdk in one ``call_batches(...)`` (each library in its own process: ``bench/fast_runner.py``,
``bench/b24pysdk_runner.py``); the naive worker consumes them from a stream for a bounded window. What the
portal applied, how many HTTP requests it saw and how many it refused come from the emulator's statistics,
not from the clients.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .common import (
    ROOT,
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
    redis_url,
    refusals,
    update_payload,
)
from .naive import run_naive
from .throughput import prepare_portal, skip_head_for

#: library -> the runner module that sends the workload through it in its own process
LIBRARIES = {"fast_bitrix24": "bench.fast_runner", "b24pysdk": "bench.b24pysdk_runner"}


def library_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def fast_bitrix24_available() -> bool:
    return library_available("fast_bitrix24")


async def run_fast_bitrix24(emu: Emulator, workdir: Path, *, n: int, timeout_s: float) -> dict[str, Any]:
    return await run_library(emu, workdir, "fast_bitrix24", n=n, timeout_s=timeout_s)


async def run_library(
    emu: Emulator, workdir: Path, library: str, *, n: int, timeout_s: float
) -> dict[str, Any]:
    """N updates through ``library``'s runner as a subprocess; what happened is counted at the portal."""
    ensure_dir(workdir)
    admin = Admin(emu.base_url)
    try:
        db = f"sqlite+aiosqlite:///{workdir / (library + '-unused.sqlite3')}"
        ids = await prepare_portal(emu, admin, n, db)
        ids_file = workdir / f"{library}-ids.json"
        ids_file.write_text(json.dumps([ids[key_of(i)] for i in range(n)]))
        before = await admin.stats()
        sampler = Sampler(admin)
        sampler.start()
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            LIBRARIES[library],
            emu.webhook_url,
            str(ids_file),
            stdout=subprocess.PIPE,
            stderr=(workdir / f"{library}.log").open("ab"),
            cwd=ROOT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
            report = json.loads(out.decode().strip().splitlines()[-1])
        except TimeoutError:
            proc.kill()
            await proc.wait()
            report = {
                "wall_s": round(time.monotonic() - started, 2),
                "exception": f"killed after {timeout_s} s",
            }
        await sampler.stop()
        after = await admin.stats()
        applied = ok_calls(after, "crm.deal.update") - ok_calls(before, "crm.deal.update")
        delta = diff_stats(after, before)
        result: dict[str, Any] = {
            "client": library,
            "operations": n,
            **report,
            "applied_by_portal": applied,
            "requests": delta["requests"],
            "refusals_total": refusals(after) - refusals(before),
            "calls_per_operation": round(delta["requests"] / applied, 4) if applied else None,
            "ops_per_s_over_wall": round(applied / report["wall_s"], 2) if report.get("wall_s") else None,
        }
        if applied > skip_head_for(n) + 500:
            result.update(
                phases(
                    sampler.samples,
                    base=ok_calls(before, "crm.deal.update"),
                    total=applied,
                    skip_head=skip_head_for(n),
                    skip_tail=min(500, n // 10),
                )
            )
        return result
    finally:
        await admin.aclose()


async def run_naive_bench(emu: Emulator, workdir: Path, *, n: int, window_s: float) -> dict[str, Any]:
    ensure_dir(workdir)
    admin = Admin(emu.base_url)
    client = aioredis.Redis.from_url(redis_url())
    ns = Namespace(client)
    try:
        db = f"sqlite+aiosqlite:///{workdir / 'naive-unused.sqlite3'}"
        ids = await prepare_portal(emu, admin, n, db)
        await enqueue_payloads(
            client, ns.stream, (update_payload(key_of(i), {"STAGE_ID": "WON"}) for i in range(n))
        )
        before = await admin.stats()
        naive = await run_naive(
            webhook_url=emu.webhook_url, redis_url=redis_url(), stream=ns.stream, ids=ids, window_s=window_s
        )
        after = await admin.stats()
        applied = ok_calls(after, "crm.deal.update") - ok_calls(before, "crm.deal.update")
        delta = diff_stats(after, before)
        return {
            "client": "naive (1 call/op, 5 immediate retries)",
            "operations": n,
            **naive.as_dict(),
            "applied_by_portal": applied,
            "requests_seen_by_portal": delta["requests"],
            "refusals_total": refusals(after) - refusals(before),
            "not_reached_in_window": n - naive.operations,
        }
    finally:
        await ns.cleanup()
        await client.aclose()
        await admin.aclose()


async def main(workdir: Path, *, n: int, window_s: float) -> dict[str, Any]:
    emu = await Emulator.start(workdir)
    try:
        out: dict[str, Any] = {}
        for library in LIBRARIES:
            if library_available(library):
                out[library] = await run_library(emu, workdir, library, n=n, timeout_s=n / 50 + 180)
            else:
                out[library] = {"skipped": f"{library} is not installed (pip install '.[bench]')"}
        out["naive"] = await run_naive_bench(emu, workdir, n=n, window_s=window_s)
        return out
    finally:
        emu.stop()


if __name__ == "__main__":
    import tempfile

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    window = float(sys.argv[2]) if len(sys.argv) > 2 else 20
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(asyncio.run(main(Path(tmp), n=count, window_s=window)), indent=2))
