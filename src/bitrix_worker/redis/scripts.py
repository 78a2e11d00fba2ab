"""Loads the Lua scripts shipped in ``lua/`` and registers them on a client (EVALSHA with fallback)."""

from __future__ import annotations

from importlib import resources

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

SCRIPT_NAMES = ("claim", "settle", "promote", "reclaim", "limiter", "leases", "breaker", "enqueue")


def load_source(name: str) -> str:
    return resources.files("bitrix_worker.redis").joinpath("lua", f"{name}.lua").read_text("utf-8")


def register(client: Redis, name: str) -> AsyncScript:
    return client.register_script(load_source(name))
