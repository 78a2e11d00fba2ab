"""Dashboard render times on a large deployment: every page must render in under 300 ms on the server.

    python -m bench.dashboard                  # 1,000,000-entry backlog, 100,000 dead letters (~2 min)
    python -m bench.dashboard --backlog 10000 --dead 2000 --outcomes 5000 --rounds 3   # a quick look

Fills a namespace in Redis (DB 12, ``bench-dash:<id>``, deleted afterwards): the backlog in the stream (a
thousand of it claimed by a consumer, so pending), dead letters with a two-attempt history each (a few keys
repeat, the rest unique), the capped outcomes stream spread over the last hour, a hundred scheduled
retries, two workers' heartbeats, and a SQLite mapping store with a row per outcome key. Then requests every
page through the real app (httpx's ASGI transport, the app's own Redis client) ``rounds`` times and
reports the server-side time each took (the ``Server-Timing`` header: routing, Redis reads, rendering).
The first request of the overview is reported separately: it reads the last hour of outcomes for the chart
once; later refreshes read only what is new.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bitrix_worker.config import load_settings
from bitrix_worker.dashboard import create_app
from bitrix_worker.mapping import Mapping, MappingStore

from .common import redis_url

LIMIT_MS = 300.0
CHUNK = 10_000


async def _pipelined(client: aioredis.Redis, n: int, add: Any) -> None:
    """``add(pipe, i)`` for i in range(n), sent CHUNK commands at a time."""
    for start in range(0, n, CHUNK):
        async with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(n, start + CHUNK)):
                add(pipe, i)
            await pipe.execute()


def _dead_letter(i: int, now_ms: int) -> dict[str, str]:
    history = [
        {"kind": "attempt", "attempt": n, "class": "invalid_data", "execution": "not_executed",
         "http_status": 400, "bitrix_code": "", "description": 'Invalid value for the "Currency" field',
         "method": "batch", "at_ms": now_ms}
        for n in (1, 2)
    ]  # fmt: skip
    key = f"order-{i % 50}" if i % 1000 == 0 else f"dead-{i}"
    payload = {"op": "create", "entity": "deal", "key": key, "fields": {"CURRENCY_ID": "XXX"}}
    error = {"class": "invalid_data" if i % 3 else "server_error", "description": "Invalid value",
             "reason": "budget", "attempts": 2, "history": history, "stream_id": f"{now_ms - 1000}-{i}",
             "dead_lettered_at": now_ms}  # fmt: skip
    return {"payload": json.dumps(payload), "error": json.dumps(error, separators=(",", ":"))}


def _outcome(i: int, n: int, now_ms: int) -> tuple[str, dict[str, str]]:
    at = now_ms - 3_600_000 + i * 3_600_000 // max(1, n)
    kind = "applied" if i % 10 else ("skipped" if i % 20 else "dead_lettered")
    fields = {"stream_id": f"{at}-0", "ident": f"deal:order-{i % 50_000}", "op": "update", "outcome": kind,
              "reason": "updated", "attempts": "1", "at_ms": str(at)}  # fmt: skip
    return f"{at}-{i}", fields


async def _fill(
    client: aioredis.Redis, settings: Any, *, backlog: int, dead: int, outcomes: int
) -> dict[str, str]:
    keys, now_ms = settings.keys, int(time.time() * 1000)

    def operation(pipe: Any, i: int) -> None:
        payload = {"op": "update", "entity": "deal", "key": f"order-{i}", "fields": {"STAGE_ID": "WON"}}
        pipe.xadd(keys.stream, {"payload": json.dumps(payload)})

    def outcome(pipe: Any, i: int) -> None:
        entry_id, fields = _outcome(i, outcomes, now_ms)
        pipe.xadd(keys.outcomes, fields, id=entry_id)

    await _pipelined(client, backlog, operation)
    await client.xgroup_create(keys.stream, settings.group, id="0")
    await client.xreadgroup(settings.group, "bench-consumer", {keys.stream: ">"}, count=1000)
    await _pipelined(client, dead, lambda pipe, i: pipe.xadd(keys.dead, _dead_letter(i, now_ms)))
    await _pipelined(client, outcomes, outcome)
    for i in range(100):
        unit = {"ident": f"deal:retry-{i}", "members": [{"origin": f"{now_ms}-{i}", "payload": "{}"}]}
        await client.zadd(keys.schedule, {f"{now_ms}-{i}": now_ms + 60_000})
        await client.hset(keys.schedule_data, f"{now_ms}-{i}", json.dumps(unit))
    await client.hset(keys.workers, mapping={"bench-a": now_ms, "bench-b": now_ms - 5000})
    await client.hset(keys.counters, mapping={"outcome:applied": outcomes, "outcome:dead_lettered": dead})
    last_dead = await client.xrevrange(keys.dead, count=1)
    middle = await client.xrange(keys.outcomes, min=f"{now_ms - 1_800_000}-0", count=1)
    return {"dead_id": last_dead[0][0].decode(), "outcome_id": middle[0][1][b"stream_id"].decode()}


async def _mapping(url: str, rows: int) -> None:
    store = await MappingStore.connect(url)
    try:
        batch = [Mapping("deal", f"order-{i}", 1000 + i, 1) for i in range(rows)]
        for start in range(0, rows, CHUNK):
            await store.record_many(batch[start : start + CHUNK])
    finally:
        await store.close()


def _pages(ids: dict[str, str]) -> dict[str, str]:
    return {
        "overview": "/",
        "overview live refresh": "/live",
        "find a key": "/find?q=order-7",
        "find a stream id": f"/find?q={ids['outcome_id']}",
        "find an unknown key": "/find?q=no-such-order",
        "dead letters": "/dead",
        "dead letters, class filter": "/dead?class=server_error",
        "dead letters, rare key filter": "/dead?key=order-7",
        "dead letters, page 2": f"/dead?before={ids['dead_id']}",
        "one dead letter": f"/dead/{ids['dead_id']}",
    }


async def _measure(app: Any, pages: dict[str, str], rounds: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as c:
        first = await c.get("/")
        results["overview, first request (reads the hour of outcomes)"] = [_server_ms(first)]
        for _ in range(rounds):
            for name, path in pages.items():
                response = await c.get(path)
                if response.status_code != 200:
                    raise SystemExit(f"{path}: HTTP {response.status_code}")
                results.setdefault(name, []).append(_server_ms(response))
    return results


def _server_ms(response: httpx.Response) -> float:
    return float(response.headers["server-timing"].split("dur=")[1])


async def main(backlog: int, dead: int, outcomes: int, rounds: int) -> int:
    url, prefix = redis_url(), f"bench-dash:{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(url)
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite+aiosqlite:///{Path(tmp) / 'mapping.sqlite3'}"
        settings = load_settings(
            redis_url=url, database_url=db, stream=f"{prefix}:ops", dead_stream=f"{prefix}:dead", group="g",
            webhook_url="https://bench.example.com/rest/1/bench-secret/",
        )  # fmt: skip
        try:
            started = time.perf_counter()
            ids = await _fill(client, settings, backlog=backlog, dead=dead, outcomes=outcomes)
            await _mapping(db, min(outcomes, 50_000))
            print(f"filled in {time.perf_counter() - started:.0f} s: backlog {backlog}, dead letters {dead}, "
                  f"outcomes {outcomes}", file=sys.stderr)  # fmt: skip
            results = await _measure(create_app(settings, redis=client), _pages(ids), rounds)
        finally:
            keys = [k async for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(*keys[start : start + 500])
            await client.aclose()
    worst = 0.0
    print(f"{'page':52} {'median ms':>10} {'max ms':>8}")
    for name, times in results.items():
        worst = max(worst, *times)
        print(f"{name:52} {statistics.median(times):10.1f} {max(times):8.1f}")
    print(f"slowest: {worst:.1f} ms (limit {LIMIT_MS:.0f} ms)")
    return 0 if worst < LIMIT_MS else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=100_000)
    parser.add_argument("--outcomes", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    a = parser.parse_args()
    raise SystemExit(asyncio.run(main(a.backlog, a.dead, a.outcomes, a.rounds)))
