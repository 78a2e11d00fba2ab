"""What one ``/metrics`` scrape of a multi-portal process costs in Redis: the queue gauges of N portals.

N portals, each with a stream of a few entries, a consumer group and a retry schedule, on a Redis of your
own (``--redis``; default the bench's). One scrape reads every portal's gauges (one pipeline and one breaker
read per portal, ``GAUGE_READS_AT_ONCE`` portals at a time: ``PrometheusEvents.refresh_portals``); the bench
times ``--scrapes`` of them (wall clock and this process's CPU), and the same reads one portal after
another for comparison, and counts the commands Redis saw (``INFO commandstats``) per scrape: server-wide,
so only exact on a Redis nobody else uses.

    python -m bench.scrape --portals 500 --redis redis://127.0.0.1:6390/0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import redis.asyncio as aioredis

from bench.common import redis_url
from bitrix_worker.config import load_settings
from bitrix_worker.fleet import portal_settings
from bitrix_worker.gate import PortalGate
from bitrix_worker.metrics import PrometheusEvents
from bitrix_worker.redis.gauges import QueueReader


async def _commands(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(int(v["calls"]) for v in stats.values())


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench-scrape-{os.getpid()}"
    settings = load_settings(
        portals="all", redis_url=args.redis, stream=f"{prefix}:ops", dead_stream=f"{prefix}:dead", group="g"
    )
    client = aioredis.Redis.from_url(args.redis, max_connections=200)
    loops = {}
    try:
        for i in range(args.portals):
            s = portal_settings(settings, f"p-{i:04d}", None)
            for n in range(3):
                await client.xadd(s.keys.stream, {"payload": str(n)})
            await client.xgroup_create(s.keys.stream, "g", id="0", mkstream=True)
            await client.zadd(s.keys.schedule, {"x": time.time() * 1000 + 60_000})
            loops[s.portal_name] = (QueueReader(client, s.keys, "g"), PortalGate.from_settings(client, s))
        for label, how in (("32 at a time", _bounded), ("one after another", _sequential)):
            times, cpu, before = [], [], await _commands(client)
            for _ in range(args.scrapes):
                started, cpu_started = time.perf_counter(), time.process_time()
                await how(loops)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - cpu_started)
            per = (await _commands(client) - before) / args.scrapes
            print(
                f"{args.portals} portals, {label}: scrape p50 {statistics.median(times) * 1000:.0f} ms "
                f"(max {max(times) * 1000:.0f}), worker CPU p50 {statistics.median(cpu) * 1000:.0f} ms, "
                f"{per:.0f} Redis commands per scrape"
            )
    finally:
        keys = [k async for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(*keys[i : i + 500])
        await client.aclose()


async def _bounded(loops: dict[str, tuple[QueueReader, PortalGate]]) -> None:
    await PrometheusEvents(portals=len(loops)).refresh_portals(loops, max_age_s=0)


async def _sequential(loops: dict[str, tuple[QueueReader, PortalGate]]) -> None:
    for reader, gate in loops.values():
        await reader.gauges()
        await gate.is_shut()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--portals", type=int, default=500)
    parser.add_argument("--scrapes", type=int, default=20)
    parser.add_argument("--redis", default=redis_url())
    asyncio.run(main(parser.parse_args()))
