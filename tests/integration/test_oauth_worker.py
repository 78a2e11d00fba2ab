"""The worker with an OAuth default portal (``BITRIX_WORKER_PORTAL``), end to end:

* four worker processes under load while the access token expires every second: every operation applied,
  0 dead letters, 0 ``invalid_grant``, one refresh per expiry (none early, every one stored);
* a dead refresh token: the portal is marked auth_broken and its gate paused; nothing is dead-lettered
  and nothing is lost (the operations wait in the stream for a reinstall).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from harness import FAST, WORKER_CMD

from bitrix_worker.config import Settings, env_name, load_settings
from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer
from bitrix_worker.emulator.oauth import OAuthConfig
from bitrix_worker.operations import Entity, OpKind
from bitrix_worker.portals.model import OAuthTokens, PortalRecord
from bitrix_worker.portals.registry import PortalRegistry
from bitrix_worker.portals.secrets import SecretBox, new_key
from bitrix_worker.producer import build_operation, enqueue_many
from bitrix_worker.worker import Worker

pytestmark = pytest.mark.timeout(120)


@dataclass
class OAuthBench:
    settings: Settings
    emulator: EmulatorServer
    redis: aioredis.Redis
    registry: PortalRegistry
    key: str

    def oauth(self) -> dict[str, Any]:
        assert self.emulator.app.portal.oauth is not None
        return self.emulator.app.portal.oauth.snapshot()

    def env(self, **overrides: Any) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("BITRIX_", "REDIS_URL", "DATABASE_URL"))
        }
        for name, value in {**self.settings.model_dump(), **overrides}.items():
            if value is None:
                continue
            raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
            env[env_name(name)] = str(raw).lower() if isinstance(raw, bool) else str(raw)
        env["BITRIX_WORKER_LOG_FORMAT"] = "json"
        return env

    async def emulator_deals(self) -> int:
        return len(self.emulator.app.portal.store.all("deal"))

    async def enqueue(self, keys: list[str]) -> None:
        ops = [build_operation(OpKind.CREATE, Entity.DEAL, k, {"TITLE": k}, None) for k in keys]
        await enqueue_many(self.redis, ops, stream=self.settings.stream)


@pytest.fixture
async def oauth_bench(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[OAuthBench]:
    cfg = EmulatorConfig(seed=7, burst=1000, drain_per_s=1000, oauth=OAuthConfig(access_lifetime_s=1.0))
    async with EmulatorServer(cfg) as emulator:
        key = new_key()
        pid = f"p-{uuid.uuid4().hex[:8]}"
        database_url = f"sqlite+aiosqlite:///{tmp_path / 'mapping.sqlite3'}"
        settings = load_settings(
            portal=pid,
            secrets_key=key,
            redis_url=redis_url,
            database_url=database_url,
            stream=f"{key_prefix}:ops",
            dead_stream=f"{key_prefix}:dead",
            group="g",
            consumer=f"{key_prefix}-w",
            rate_burst=1000,
            rate_per_s=1000,
            **FAST,
        )
        registry = await PortalRegistry.connect(database_url, box=SecretBox([key]))
        assert cfg.oauth is not None
        await registry.add(
            PortalRecord(
                pid,
                "oauth",
                f"{emulator.base_url}/rest/",
                client_id=cfg.oauth.client_id,
                client_secret=cfg.oauth.client_secret,
                tokens=OAuthTokens(cfg.oauth.access_token, cfg.oauth.refresh_token),
                token_url=f"{emulator.base_url}/oauth/token/",
            )
        )
        client = aioredis.Redis.from_url(redis_url)
        try:
            yield OAuthBench(settings, emulator, client, registry, key)
        finally:
            await registry.close()
            keys = [k async for k in client.scan_iter(match=f"*{key_prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
            await client.aclose()


async def test_four_workers_under_load_with_expiring_tokens(oauth_bench: OAuthBench) -> None:
    b = oauth_bench
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *WORKER_CMD,
            env=b.env(consumer=f"oauth-w{i}", http_port=0),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        for i in range(4)
    ]
    total = 0
    try:
        started = time.monotonic() + 30
        while await b.redis.hlen(b.settings.keys.workers) < 4 and time.monotonic() < started:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        end = time.monotonic() + 8.0
        while time.monotonic() < end:  # a steady load across several token lifetimes
            await b.enqueue([f"k-{total + i}" for i in range(25)])
            total += 25
            await asyncio.sleep(0.1)
        admin = EmulatorAdmin(b.emulator.base_url)
        try:
            deadline = time.monotonic() + 60
            while len(await admin.entities("deal")) < total and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
            created = len(await admin.entities("deal"))
        finally:
            await admin.aclose()
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        errors = [(await p.communicate())[1].decode() for p in procs]
    assert created == total, errors[0][-2000:]
    assert await b.redis.xlen(b.settings.dead_stream) == 0
    stats = b.oauth()
    assert stats["invalid_grant"] == 0
    assert stats["early_refreshes"] == 0
    assert stats["refreshes"] >= 3, stats
    pair, state = await b.registry.tokens(b.settings.portal or "")
    assert (pair.version, state) == (stats["refreshes"], "active")


async def test_a_dead_refresh_token_pauses_the_portal_and_dead_letters_nothing(
    oauth_bench: OAuthBench,
) -> None:
    b = oauth_bench
    pid = b.settings.portal or ""
    record = await b.registry.get(pid)
    assert record.tokens is not None
    dead = OAuthTokens(record.tokens.access_token, "refresh-token-nobody-issued")
    await b.registry.store_tokens(pid, dead, expected_version=0)
    assert b.emulator.app.portal.oauth is not None
    b.emulator.app.portal.oauth.expire_now()
    await b.enqueue([f"k-{i}" for i in range(5)])
    async with Worker.open(b.settings) as worker:
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + 20
        while not (await worker.portal.gate.state()).manual and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # long enough for anything wrong to be dead-lettered
        worker.stop()
        await asyncio.wait_for(task, 20)
        gate = await worker.portal.gate.state()
    assert gate.open
    assert gate.manual
    assert "invalid_grant" in gate.reason
    assert (await b.registry.get(pid)).state == "auth_broken"
    assert b.oauth()["invalid_grant"] == 1
    assert await b.redis.xlen(b.settings.dead_stream) == 0
    assert await b.emulator_deals() == 0
    outcomes = await b.redis.xrange(b.settings.keys.outcomes)
    assert outcomes == []  # no operation reached a final outcome: all 5 are held for a reinstall
    [group] = await b.redis.xinfo_groups(b.settings.stream)
    scheduled = await b.redis.zcard(b.settings.keys.schedule)
    assert group["pending"] + group["lag"] + scheduled >= 5
