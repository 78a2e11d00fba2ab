"""Shared limits in Redis: the portal's request bucket, per-method pauses and the portal circuit breaker.

All three are shared by every worker process on every host, because Bitrix24 counts requests per portal and
source IP, not per process (docs/errors.md, "Limits shared by every worker").
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .errors import StoreError
from .redis.scripts import register

Clock = Callable[[], float]
RECOVERY_PER_S = 0.02  # the slow-down factor climbs back from 0.5 to 1.0 in 25 s without refusals


@dataclass(frozen=True, slots=True)
class LimiterState:
    factor: float
    backlog_s: float  # how far ahead of now the bucket is booked
    next_free_s: float = 0.0  # how long until the next request may be sent


class Limiter:
    """GCRA leaky bucket per portal; ``acquire`` waits until this request may be sent."""

    def __init__(
        self,
        client: Redis,
        key: str,
        *,
        rate_per_s: float,
        burst: int,
        safety: float = 1.0,
        max_reserve_s: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self._client = client
        self._key = key
        self._rate = rate_per_s * safety
        self._burst = max(1.0, burst * safety)
        self._max_reserve_ms = int(max_reserve_s * 1000)
        self._clock = clock
        self._script = register(client, "limiter")

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))

    async def _run(self, command: str) -> Any:
        try:
            return await self._script(
                keys=[self._key],
                args=[
                    command,
                    self._rate,
                    self._burst,
                    self._max_reserve_ms,
                    self._now_arg(),
                    RECOVERY_PER_S,
                ],
            )
        except RedisError as exc:
            raise StoreError(f"limiter failed: {exc}") from exc

    async def reserve(self) -> float:
        """Book the next slot; returns seconds to wait (negative: nothing booked, ask again after that)."""
        return int(await self._run("acquire")) / 1000

    async def acquire(self) -> float:
        """Wait for and take one request slot; returns the seconds waited."""
        waited = 0.0
        while True:
            wait = await self.reserve()
            if wait >= 0:
                if wait > 0:
                    await asyncio.sleep(wait)
                return waited + wait
            await asyncio.sleep(-wait - self._max_reserve_ms / 1000 + 0.001)
            waited += -wait - self._max_reserve_ms / 1000

    async def penalize(self) -> None:
        await self._run("penalize")

    async def state(self) -> LimiterState:
        factor, tat, now, next_ms = await self._run("state")
        return LimiterState(
            float(factor), max(0.0, (float(tat) - float(now)) / 1000), max(0.0, float(next_ms) / 1000)
        )


class MethodPauses:
    """Per-method pauses (OPERATION_TIME_LIMIT) and the operating time each method has used."""

    def __init__(
        self, client: Redis, key: str, *, budget_s: float, safety: float, clock: Clock = time.time
    ) -> None:
        self._client = client
        self._key = key
        self._threshold_s = budget_s * safety
        self._clock = clock

    async def pause(self, method: str, until: float) -> None:
        try:
            current = await self._client.hget(self._key, f"pause:{method}")
            if current is None or float(current) < until:
                await self._client.hset(self._key, f"pause:{method}", f"{until:.3f}")
        except RedisError as exc:
            raise StoreError(f"method pause failed: {exc}") from exc

    async def paused_for(self, methods: list[str]) -> dict[str, float]:
        """Seconds each paused method must still wait; methods not paused are absent."""
        if not methods:
            return {}
        try:
            values = await self._client.hmget(self._key, [f"pause:{m}" for m in methods])
        except RedisError as exc:
            raise StoreError(f"method pause failed: {exc}") from exc
        now = self._clock()
        return {m: float(v) - now for m, v in zip(methods, values, strict=True) if v and float(v) > now}

    async def observe(self, method: str, operating: float | None, reset_at: float | None) -> float | None:
        """Track ``time.operating``; pause the method before it reaches the portal's budget.

        Returns the pause end (unix time) when one was set.
        """
        if operating is None:
            return None
        try:
            await self._client.hset(self._key, f"operating:{method}", json.dumps([operating, reset_at]))
        except RedisError as exc:
            raise StoreError(f"method tracking failed: {exc}") from exc
        if operating >= self._threshold_s and reset_at:
            await self.pause(method, reset_at)
            return reset_at
        return None

    async def reset_at(self, method: str) -> float | None:
        """``operating_reset_at`` from the last successful answer of this method (for a 429)."""
        try:
            raw = await self._client.hget(self._key, f"operating:{method}")
        except RedisError as exc:
            raise StoreError(f"method tracking failed: {exc}") from exc
        if raw is None:
            return None
        _, reset = json.loads(raw)
        return float(reset) if reset else None


@dataclass(frozen=True, slots=True)
class BreakerState:
    open: bool
    reason: str = ""
    until: float = 0.0
    cooldown_s: float = 0.0
    trips: int = 0
    probe_owner: str = ""  # a worker holding a real operation to use as the first probe


class Breaker:
    """Circuit breaker per portal, in Redis so that every worker stops and resumes together.

    Opened by an auth error (a configuration problem) or by OVERLOAD_LIMIT (a manual block). While it is
    open nobody consumes the stream; after the cool-down one worker wins the probe lock and tries.
    """

    def __init__(
        self, client: Redis, key: str, *, cooldown_s: float, max_cooldown_s: float, clock: Clock = time.time
    ) -> None:
        self._client = client
        self._key = key
        self._cooldown_s = cooldown_s
        self._max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._script = register(client, "breaker")

    async def state(self) -> BreakerState:
        try:
            raw = await self._client.hgetall(self._key)
        except RedisError as exc:
            raise StoreError(f"breaker failed: {exc}") from exc
        if not raw or raw.get(b"open") != b"1":
            return BreakerState(open=False, trips=int(raw.get(b"trips", 0)) if raw else 0)
        return BreakerState(
            open=True,
            reason=_text(raw.get(b"reason", b"")),
            until=float(raw.get(b"until", 0)),
            cooldown_s=float(raw.get(b"cooldown", 0)),
            trips=int(raw.get(b"trips", 0)),
            probe_owner=_text(raw.get(b"probe_owner", b"")),
        )

    async def trip(
        self, reason: str, *, cooldown_s: float | None = None, probe_owner: str = ""
    ) -> tuple[bool, BreakerState]:
        """Open the breaker; returns whether this call opened it (False: a running cool-down already covers
        this outage) and the resulting state. After a cool-down ran out, a trip doubles it."""
        try:
            tripped, until, cooldown, trips = await self._script(
                keys=[self._key],
                args=[
                    f"{self._clock():.3f}",
                    reason,
                    self._cooldown_s,
                    self._max_cooldown_s,
                    "" if cooldown_s is None else f"{cooldown_s:.3f}",
                    probe_owner,
                ],
            )
        except RedisError as exc:
            raise StoreError(f"breaker failed: {exc}") from exc
        opened = _text(tripped) == "1"
        state = BreakerState(
            True, reason, float(until), float(cooldown), int(trips), probe_owner if opened else ""
        )
        return opened, state

    async def close(self) -> None:
        try:
            await self._client.delete(self._key, f"{self._key}:probe")
        except RedisError as exc:
            raise StoreError(f"breaker failed: {exc}") from exc

    async def release_probe(self) -> None:
        try:
            await self._client.delete(f"{self._key}:probe")
        except RedisError as exc:
            raise StoreError(f"breaker failed: {exc}") from exc

    async def acquire_probe(self, ttl_s: float) -> bool:
        try:
            return bool(
                await self._client.set(f"{self._key}:probe", "1", nx=True, px=max(1, int(ttl_s * 1000)))
            )
        except RedisError as exc:
            raise StoreError(f"breaker failed: {exc}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
