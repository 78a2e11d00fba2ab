"""The seed's behaviour, as a baseline: one call per operation, every error retried 5 times at once.

It reads the same stream as our worker (a consumer group, acked after each operation), sends one
``crm.deal.<op>`` per operation with httpx, and on any failure (HTTP error status, transport error, or an
``error`` in the body) tries again immediately, up to 5 retries (6 attempts); then it gives up and acks.
No batching, no backoff, no shared limiter, no classification. It runs for a bounded time window.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis.asyncio as aioredis

RETRIES = 5  # after the first attempt: the seed's retry_count < 5 loop


@dataclass
class NaiveResult:
    operations: int = 0  # taken from the stream and finished (applied or given up)
    applied: int = 0
    given_up: int = 0
    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    window_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "operations_finished": self.operations,
            "applied": self.applied,
            "given_up": self.given_up,
            "requests": self.requests,
            "errors": dict(self.errors),
            "window_s": round(self.window_s, 2),
            "ops_per_s": round(self.applied / self.window_s, 2) if self.window_s else 0.0,
            "calls_per_operation": round(self.requests / self.operations, 3) if self.operations else None,
        }


def _method_and_params(payload: dict[str, Any], ids: dict[str, int]) -> tuple[str, dict[str, Any]]:
    op, entity, key = payload["op"], payload["entity"], payload["key"]
    fields = payload.get("fields", {})
    if op == "create":
        return f"crm.{entity}.add", {"fields": {**fields, "ORIGINATOR_ID": "bitrix-worker", "ORIGIN_ID": key}}
    if op == "delete":
        return f"crm.{entity}.delete", {"id": ids[key]}
    return f"crm.{entity}.update", {"id": ids[key], "fields": fields}


async def _attempt(http: httpx.AsyncClient, url: str, params: dict[str, Any]) -> str | None:
    """None on success, else a short error label."""
    try:
        response = await http.post(url, json=params)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    if response.status_code != 200:
        try:
            return str(response.json().get("error") or response.json().get("error_description"))
        except ValueError:
            return f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if body.get("error"):
        return str(body["error"])
    return None


async def run_naive(
    *,
    webhook_url: str,
    redis_url: str,
    stream: str,
    ids: dict[str, int],
    window_s: float,
    group: str = "naive",
    stop_when_empty: bool = True,
    count: int = 10,
) -> NaiveResult:
    """Consume ``stream`` for at most ``window_s`` seconds (or until it is empty). Entries read but not
    started when the window closes stay pending; ``count=1`` leaves none (for back-to-back windows)."""
    client = aioredis.Redis.from_url(redis_url)
    result = NaiveResult()
    try:
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
        except aioredis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        started = time.monotonic()
        deadline = started + window_s
        async with httpx.AsyncClient(timeout=30) as http:
            while time.monotonic() < deadline:
                batch = await client.xreadgroup(group, "naive-1", {stream: ">"}, count=count)
                if not batch:
                    if stop_when_empty:
                        break
                    await asyncio.sleep(0.05)
                    continue
                for entry_id, fields in batch[0][1]:
                    if time.monotonic() >= deadline:
                        break
                    method, params = _method_and_params(json.loads(fields[b"payload"]), ids)
                    url = webhook_url + method
                    for _ in range(1 + RETRIES):
                        result.requests += 1
                        error = await _attempt(http, url, params)
                        if error is None:
                            result.applied += 1
                            break
                        result.errors[error] += 1
                    else:
                        result.given_up += 1
                    result.operations += 1
                    await client.xack(stream, group, entry_id)
        result.window_s = time.monotonic() - started
        return result
    finally:
        await client.aclose()
