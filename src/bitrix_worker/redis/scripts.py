"""Loads the Lua scripts shipped in ``lua/`` and registers them on a client (EVALSHA with fallback).

``turns.lua`` holds what several scripts share (the coalescing rule, the parked queues, whose an entry is
and which ident it takes); it is prepended to the scripts that use it, so each rule is written once.
"""

from __future__ import annotations

from importlib import resources

from redis.commands.core import AsyncScript

from .connection import RedisClient

SCRIPT_NAMES = (
    "claim",
    "settle",
    "promote",
    "reclaim",
    "limiter",
    "leases",
    "breaker",
    "migrate_parked",
    "own_since",
    "mark_sent",
    "replay",
    "enqueue",
)
_USES_TURNS = frozenset({"claim", "settle", "reclaim", "migrate_parked"})


def _read(name: str) -> str:
    return resources.files("bitrix_worker.redis").joinpath("lua", f"{name}.lua").read_text("utf-8")


def load_source(name: str) -> str:
    source = _read(name)
    return _read("turns") + "\n" + source if name in _USES_TURNS else source


def register(client: RedisClient, name: str) -> AsyncScript:
    return client.register_script(load_source(name))
