"""A worker test bench: a real Redis, the emulator over loopback HTTP, a SQLite mapping store.

Backoffs and cool-downs are scaled down (settings, not mocks) so the taxonomy's budgets run in seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bitrix_worker.config import Settings, load_settings
from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer
from bitrix_worker.operations import OpKind
from bitrix_worker.producer import build_operation, enqueue
from bitrix_worker.worker import RunSummary, Worker

FAST = {
    "backoff_base_s": 0.02,
    "backoff_max_s": 0.2,
    "rate_limit_backoff_base_s": 0.01,
    "breaker_cooldown_s": 0.4,
    "breaker_max_cooldown_s": 0.8,
    "claim_idle_ms": 1500,
    "block_ms": 100,
    "read_timeout_s": 2.0,
    "portal_request_timeout_s": 1.0,
    "connect_timeout_s": 1.0,
    "shutdown_grace_s": 5.0,
    "http_port": 0,
}


@dataclass
class Bench:
    settings: Settings
    redis: aioredis.Redis
    emulator: EmulatorServer
    admin: EmulatorAdmin
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    def with_settings(self, **overrides: Any) -> Bench:
        data = {**self.settings.model_dump(), **overrides}
        data["webhook_url"] = self.settings.webhook.reveal()
        self.settings = load_settings(**data)
        return self

    async def enqueue(
        self,
        op: str,
        key: str,
        fields: dict[str, Any] | None = None,
        version: int | None = None,
        entity: str = "deal",
        *,
        products: list[dict[str, Any]] | None = None,
    ) -> str:
        operation = build_operation(OpKind(op), entity, key, fields, version, products=products)
        return await enqueue(self.redis, operation, stream=self.settings.stream)

    async def enqueue_raw(self, fields: dict[str, Any]) -> str:
        return (await self.redis.xadd(self.settings.stream, fields)).decode()

    async def run(self, *, timeout_s: float = 30.0, **overrides: Any) -> RunSummary:
        settings = self.settings
        if overrides:
            settings = load_settings(
                **{**settings.model_dump(), "webhook_url": settings.webhook.reveal(), **overrides}
            )
        async with Worker.open(settings) as worker:
            self.workers.append(worker)
            return await asyncio.wait_for(worker.run(until_idle=True), timeout_s)

    async def dead(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        rows = await self.redis.xrange(self.settings.dead_stream)
        return [(json.loads(f[b"payload"]), json.loads(f[b"error"])) for _, f in rows]

    async def outcomes(self) -> list[dict[str, str]]:
        rows = await self.redis.xrange(self.settings.keys.outcomes)
        return [{k.decode(): v.decode() for k, v in f.items()} for _, f in rows]

    async def calls(self, method: str) -> Counter[str]:
        stats = await self.admin.stats()
        return Counter(stats["calls"].get(method, {}))

    async def total_calls(self, method: str) -> int:
        return sum((await self.calls(method)).values())

    async def entities(self, entity: str = "deal") -> list[dict[str, Any]]:
        return await self.admin.entities(entity)


def settings_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The environment a worker subprocess needs to run with these settings."""
    import os

    from bitrix_worker.config import env_name

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "REDIS_URL", "DATABASE_URL"))}
    data = {**settings.model_dump(), **overrides}
    data["webhook_url"] = settings.webhook.reveal()
    for name, value in data.items():
        if value is None:
            continue
        env[env_name(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    env["BITRIX_WORKER_LOG_FORMAT"] = "json"
    return env


WORKER_CMD = ["-c", "from bitrix_worker.cli import main; main()", "run"]


@asynccontextmanager
async def open_bench(
    redis_url: str, key_prefix: str, tmp: Path, config: EmulatorConfig | None = None
) -> AsyncIterator[Bench]:
    """A real Redis, the emulator on loopback and a SQLite mapping store, wired into worker settings.

    Limits are lifted (1000/s) so tests measure behaviour, not the portal's pace; keys under ``key_prefix``
    are deleted afterwards.
    """
    config = config or EmulatorConfig()
    lifted = config.model_copy(update={"seed": 7, "burst": 1000, "drain_per_s": 1000})
    async with EmulatorServer(lifted) as emulator:
        settings = load_settings(
            webhook_url=emulator.webhook_url,
            redis_url=redis_url,
            database_url=f"sqlite+aiosqlite:///{tmp / 'mapping.sqlite3'}",
            stream=f"{key_prefix}:ops",
            dead_stream=f"{key_prefix}:dead",
            group="g",
            consumer=f"{key_prefix}-w",
            rate_burst=1000,
            rate_per_s=1000,
            **FAST,
        )
        client = aioredis.Redis.from_url(redis_url)
        admin = EmulatorAdmin(emulator.base_url)
        try:
            yield Bench(settings, client, emulator, admin, tmp)
        finally:
            await admin.aclose()
            keys = [k async for k in client.scan_iter(match=f"*{key_prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
