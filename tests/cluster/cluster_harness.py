"""The worker bench of ``tests/integration/harness.py`` on a Redis Cluster: settings whose stream and dead
letters share one slot, the emulator on loopback, a ``RedisCluster`` client, a SQLite mapping store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from redis.asyncio import RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from harness import FAST, Bench
from scripts.local_cluster import LocalCluster

from bitrix_worker.config import load_settings
from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer


def cluster_settings(url: str, prefix: str, tmp: Path, webhook_url: str, **overrides: Any) -> Any:
    """Worker settings on a Cluster: the stream ``<prefix>:ops`` and its dead letters in the same slot."""
    stream = f"{prefix}:ops"
    return load_settings(
        webhook_url=webhook_url,
        redis_url=url,
        database_url=f"sqlite+aiosqlite:///{tmp / 'mapping.sqlite3'}",
        stream=stream,
        dead_stream=f"{{{stream}}}:dead",
        group="g",
        consumer=f"{prefix}-w",
        rate_burst=1000,
        rate_per_s=1000,
        **{**FAST, **overrides},
    )


async def open_cluster_bench(cluster: LocalCluster, prefix: str, tmp: Path) -> tuple[Bench, EmulatorServer]:
    emulator = EmulatorServer(EmulatorConfig(seed=7, burst=1000, drain_per_s=1000))
    await emulator.__aenter__()
    settings = cluster_settings(cluster.url, prefix, tmp, emulator.webhook_url)
    host, port = cluster.seed
    client = RedisCluster(host=host, port=port)
    return Bench(settings, client, emulator, EmulatorAdmin(emulator.base_url), tmp), emulator  # type: ignore[arg-type]


async def close_cluster_bench(
    bench: Bench, emulator: EmulatorServer, prefix: str, *, clean: bool = True
) -> None:
    """Close the bench; ``clean`` deletes its keys (not worth it on a Cluster the test throws away)."""
    await bench.admin.aclose()
    try:
        if clean:
            keys = [k async for k in bench.redis.scan_iter(match=f"*{prefix}*", count=500)]
            for key in keys:
                await bench.redis.delete(key)
    finally:
        await bench.redis.aclose()
        await emulator.__aexit__(None, None, None)
