"""Fixtures for the exactly-once and chaos tests.

The focused tests reuse the integration bench (``tests/integration/harness.py``): a real Redis, the
emulator in a thread on loopback and a SQLite mapping store. The chaos test runs the emulator and the
workers as separate processes.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))


@pytest.fixture
async def bench(redis_url: str, key_prefix: str, tmp_path: Path) -> AsyncIterator[Any]:
    """The integration bench (same wiring as ``tests/integration/conftest.py``)."""
    import redis.asyncio as aioredis
    from harness import FAST, Bench

    from bitrix_worker.config import load_settings
    from bitrix_worker.emulator import EmulatorAdmin, EmulatorConfig, EmulatorServer

    async with EmulatorServer(EmulatorConfig(seed=7, burst=1000, drain_per_s=1000)) as emulator:
        settings = load_settings(
            webhook_url=emulator.webhook_url,
            redis_url=redis_url,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'mapping.sqlite3'}",
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
            yield Bench(settings, client, emulator, admin, tmp_path)
        finally:
            await admin.aclose()
            keys = [k async for k in client.scan_iter(match=f"*{key_prefix}*", count=500)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
